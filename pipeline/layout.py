"""What every file and folder mixprep writes is called, and the checks that read them back.

A token cache (``cache_dir``)::

    CACHE/<source>/<fingerprint[:16]>/
      part-NNNNN.bin/.idx          input file NNNNN's tokens, an entry per document (``part_prefix``)
      part-NNNNN.docs.parquet      its document table, row i for entry i (``doc_table``)
      part-NNNNN.rejects.jsonl     the records rejected while reading it, when there are some
      part-NNNNN.json              its summary, written last: the part is done (``finished_part``)
      cache.json                   the cache's manifest (inputs, tokenizer, totals), written last: finished
      readers/<run>.json           sampled caches: a run reading it now (``reader_mark``)

A mixture folder (``OUT``; a held-out split's folder ``OUT/<split>/`` is one of its own)::

    NAME-NNNNN-of-MMMMM.bin/.idx   the shards (``shard_name``)
    _shards/<shard>.json           a shard's record, written after its files: the shard is done (``finished_shard``)
    _provenance/<shard>.refs.npy   its document copies in stream order
    _refs/SSS-PPPPP.refs           routed references while packing, a file per cache part
    _dedup/<id>/                   a dedup resolution's removals by cache part, until dedup-removed.parquet
    _plan.json                     a one-pipeline run's plan note, while it runs
    tokenizer.json  gpt-neox-data.json  megatron-args.txt  megatron-args.json   for the trainers
    report.md  report/*.png
    manifest.json                  written last: the folder is complete

Standard library and ``storage`` only (which loads Beam on a URI's first use): the trainer-side
reader (``dataset``) imports this with numpy alone.
"""

from __future__ import annotations

import glob
import os
import re

from . import storage
from .errors import OutputError
from .storage import _TEMP_MARK

__all__ = [
    "ARGS_FILE", "ARGS_JSON", "CACHE_MANIFEST", "MANIFEST", "MEGATRON_CACHE_DIR", "NEOX_FILE", "PLAN_FILE",
    "PLOT_FILES", "PROVENANCE_DIR", "READERS_DIR", "REFS_DIR", "REPORT_DIR", "REPORT_FILE", "SHARDS_DIR",
    "SPLIT_FOLDERS", "TOKENIZER_FILE",
    # token caches
    "cache_dir", "source_dir", "source_dir_of", "cache_manifest", "is_finished_cache", "caches_in", "cache_of",
    "part_name", "part_prefix", "part_summary", "doc_table", "rejects_file", "finished_part", "part_summaries",
    "parts_in_progress", "reader_mark", "readers_dir",
    # mixture folders
    "manifest_path", "plan_path", "shard_name", "shard_names", "parse_shard_name", "shard_prefix", "shard_files",
    "sidecar_path", "provenance_rel", "provenance_path", "refs_dir", "refs_path", "split_folder", "split_dir",
    "split_mixture", "megatron_cache_dir", "in_progress", "finished_shard", "written_shards", "remove_stale_shards",
    "prepare_output", "prepare_splits",
]

# --- token caches ----------------------------------------------------------------------------

CACHE_MANIFEST = "cache.json"
READERS_DIR = "readers"
_PART = "part-{:05d}"
_PART_SUMMARY = re.compile(r"^part-(\d{5})\.json$")
_PART_IN_PROGRESS = re.compile(r"^part-(\d{5})\.bin" + re.escape(_TEMP_MARK))


def source_dir(cache_root: str, source: str) -> str:
    """A source's folder of caches (one per fingerprint)."""
    return storage.join(cache_root, source)


def cache_dir(cache_root: str, source: str, fingerprint: str) -> str:
    return storage.join(source_dir(cache_root, source), fingerprint[:16])


def source_dir_of(directory: str) -> str:
    """The source folder a cache folder is in."""
    return directory.rsplit("/", 1)[0]


def cache_manifest(directory: str) -> str:
    return storage.join(directory, CACHE_MANIFEST)


def cache_of(manifest: str) -> str:
    """The cache folder of a ``cache.json`` path."""
    return manifest[: -len("/" + CACHE_MANIFEST)]


def is_finished_cache(directory: str) -> bool:
    return storage.exists(cache_manifest(directory))


def caches_in(folder: str) -> list[str]:
    """The finished caches directly under ``folder`` (a source's folder)."""
    return [cache_of(p) for p in storage.list_files(folder, "*/" + CACHE_MANIFEST)]


def part_name(index: int) -> str:
    return _PART.format(index)


def part_prefix(directory: str, index: int) -> str:
    """A part's .bin/.idx prefix; its other files are named from it."""
    return storage.join(directory, part_name(index))


def part_summary(prefix: str) -> str:
    return prefix + ".json"


def doc_table(prefix: str) -> str:
    return prefix + ".docs.parquet"


def rejects_file(prefix: str) -> str:
    return prefix + ".rejects.jsonl"


def finished_part(prefix: str, fingerprint: str, file: str) -> dict | None:
    """The summary of the part at ``prefix`` if it is done for this cache and input ``file`` (its
    ``SourceFile.rel``): the summary, written after the .bin/.idx, names both, and they are there."""
    path = part_summary(prefix)
    if not storage.exists(path):
        return None
    summary = storage.read_json(path)
    if summary.get("fingerprint") != fingerprint or summary.get("file") != file:
        return None
    if not (storage.exists(prefix + ".bin") and storage.exists(prefix + ".idx")):
        return None
    return summary


def part_summaries(directory: str) -> dict[int, str]:
    """Part index -> path of every part summary in a cache folder (local, gs:// or s3://)."""
    found = {}
    for path in storage.list_files(directory, "part-*.json"):
        if m := _PART_SUMMARY.match(path.rsplit("/", 1)[-1]):
            found[int(m.group(1))] = path
    return found


def parts_in_progress(directory: str) -> list[tuple[int, str]]:
    """(part index, path) of the temporary .bin files being written in a local cache folder."""
    if storage.is_remote(directory):
        return []
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), "part-*.bin" + _TEMP_MARK + "*")):
        if m := _PART_IN_PROGRESS.match(os.path.basename(path)):
            found.append((int(m.group(1)), path))
    return found


def readers_dir(directory: str) -> str:
    return storage.join(directory, READERS_DIR)


def reader_mark(directory: str, run: str) -> str:
    """Where run ``run`` marks that it reads the (sampled) cache in ``directory``."""
    return storage.join(readers_dir(directory), f"{run}.json")


# --- mixture folders -------------------------------------------------------------------------

MANIFEST = "manifest.json"  # written last: its presence means the folder is complete
PLAN_FILE = "_plan.json"  # the plan step's note of a one-pipeline run: plan hash, tokens, selections
DEDUP_FILE = "dedup-removed.parquet"  # the documents dedup removed and the ones kept in their place (mix/dedup.py)
NEAR_PAIRS_FILE = "_near-pairs.json"  # the near-dedup job's verified pairs, read by the driver and removed
SHARDS_DIR = "_shards"
PROVENANCE_DIR = "_provenance"
DEDUP_DIR = "_dedup"  # a resolution's removals by cache part while the run lasts (dedup/removed.py)
REFS_DIR = "_refs"  # routed references, a file per cache part, removed once every shard is written
TOKENIZER_FILE = "tokenizer.json"  # the run's tokenizer.json, copied beside the shards for the trainer
NEOX_FILE = "gpt-neox-data.json"
ARGS_FILE, ARGS_JSON = "megatron-args.txt", "megatron-args.json"
MEGATRON_CACHE_DIR = "megatron-cache"  # --data-cache-path: where Megatron writes its index .npy files
REPORT_FILE = "report.md"
REPORT_DIR = "report"  # the plots, beside report.md
PLOT_FILES = {
    "shares": "shares.png",
    "lengths": "lengths.png",
    "epochs": "epochs.png",
}
SPLIT_FOLDERS = ("valid", "test")  # every split a mixture may have, in drawing order; each is packed into out/SPLIT/
_SHARD = re.compile(r"^(?P<mixture>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def manifest_path(folder: str) -> str:
    return storage.join(folder, MANIFEST)


def plan_path(out: str) -> str:
    return storage.join(out, PLAN_FILE)


def dedup_path(out: str) -> str:
    return storage.join(out, DEDUP_FILE)


def dedup_dir(out: str) -> str:
    return storage.join(out, DEDUP_DIR)


def near_pairs_path(out: str) -> str:
    return storage.join(out, NEAR_PAIRS_FILE)


def shard_name(mixture: str, index: int, count: int) -> str:
    return f"{mixture}-{index:05d}-of-{count:05d}"


def shard_names(mixture: str, count: int) -> list[str]:
    return [shard_name(mixture, i, count) for i in range(count)]


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(mixture, index, count) of a shard name (no extension), or None for another name.

    >>> parse_shard_name("stage1-00002-of-00004"), parse_shard_name("manifest")
    (('stage1', 2, 4), None)
    """
    m = _SHARD.match(name)
    return (m["mixture"], int(m["index"]), int(m["count"])) if m else None


def shard_prefix(out: str, shard: str) -> str:
    """A shard's .bin/.idx prefix."""
    return storage.join(out, shard)


def shard_files(out: str, shard: str) -> list[str]:
    """A shard's .bin and .idx."""
    return [storage.join(out, shard + ext) for ext in (".bin", ".idx")]


def sidecar_path(out: str, shard: str) -> str:
    """A shard's record (``_shards/<shard>.json``)."""
    return storage.join(out, SHARDS_DIR, shard + ".json")


def provenance_rel(shard: str) -> str:
    """A shard's provenance file, relative to the mixture folder (as its record names it)."""
    return f"{PROVENANCE_DIR}/{shard}.refs.npy"


def provenance_path(out: str, shard: str) -> str:
    return storage.join(out, PROVENANCE_DIR, shard + ".refs.npy")


def refs_dir(out: str) -> str:
    return storage.join(out, REFS_DIR)


def refs_path(out: str, source: int, part: int) -> str:
    """The routed references of one cache part (source index, part index)."""
    return storage.join(refs_dir(out), f"{source:03d}-{part:05d}.refs")


def split_folder(split: str) -> str:
    """A held-out split's folder, relative to the mixture's: the split's name."""
    return split


def split_dir(out: str, split: str) -> str:
    """A held-out split's mixture folder."""
    return storage.join(out, split_folder(split))


def split_mixture(name: str, split: str) -> str:
    """A held-out split's mixture name: its shards are ``NAME-SPLIT-NNNNN-of-MMMMM``."""
    return f"{name}-{split}"


def megatron_cache_dir(folder: str) -> str:
    return storage.join(folder, MEGATRON_CACHE_DIR)


def in_progress(path: str) -> list[str]:
    """The temporary files a local writer is filling for ``path`` (``storage.temp_name``)."""
    if storage.is_remote(path):
        return []
    return glob.glob(glob.escape(path) + _TEMP_MARK + "*")


def finished_shard(out: str, shard: str, plan_hash: str | None) -> dict | None:
    """The record of ``shard`` in ``out`` if the shard is done for ``plan_hash`` (None: for any plan).

    Done: its record (written last) names the plan, and the .bin, .idx and provenance are there.
    """
    sidecar = sidecar_path(out, shard)
    if not storage.exists(sidecar):
        return None
    record = storage.read_json(sidecar)
    if plan_hash is not None and record.get("plan_hash") != plan_hash:
        return None
    if not all(storage.exists(p) for p in [*shard_files(out, shard), provenance_path(out, shard)]):
        return None
    return record


def written_shards(out: str, name: str, count: int, plan_hash: str) -> list[dict]:
    """Every promised shard's record; one missing or of another plan is an OutputError, never a short manifest."""
    records = []
    for shard in shard_names(name, count):
        record = finished_shard(out, shard, plan_hash)
        if record is None:
            raise OutputError(shard_files(out, shard)[0],
                              RuntimeError("the pack stage finished without writing this shard"))
        records.append(record)
    return records


def remove_stale_shards(out: str, name: str, count: int) -> None:
    """Delete what the manifest to come will not list: the manifest itself (the folder is incomplete
    until the new one), shards, records and provenance of another shard count, and a crashed run's
    routed references (each run routes its own)."""
    keep = set(shard_names(name, count))
    storage.delete(manifest_path(out))
    stale = storage.list_files(out, f"{name}-*-of-*.*")
    for folder in (SHARDS_DIR, PROVENANCE_DIR):
        stale += storage.list_files(storage.join(out, folder), "*")
    for path in stale:
        if path.rsplit("/", 1)[-1].split(".", 1)[0] not in keep:
            storage.delete(path)
    storage.delete_tree(refs_dir(out))


def prepare_output(out: str, name: str, count: int) -> None:
    """Ready ``out`` for ``count`` shards of mixture ``name``: the folder made, stale files removed
    (``remove_stale_shards``), and a crashed one-pipeline run's plan note."""
    storage.make_dirs(out)
    remove_stale_shards(out, name, count)
    storage.delete(plan_path(out))
    storage.delete(dedup_path(out))  # an earlier run's removals: this run writes its own, or none


def prepare_splits(out: str, name: str, counts: dict[str, int]) -> None:
    """Each held-out split's folder readied as ``prepare_output`` does (``counts``: shards of each
    split asked for); a split not asked for loses an earlier run's shards and manifest, so the folder
    holds only what this manifest lists."""
    for split in SPLIT_FOLDERS:
        folder, mixture = split_dir(out, split), split_mixture(name, split)
        if counts.get(split):
            prepare_output(folder, mixture, counts[split])
        elif storage.exists(manifest_path(folder)) or storage.list_files(folder, f"{mixture}-*-of-*.*"):
            remove_stale_shards(folder, mixture, 0)
