"""``mixprep verify PATH``: check a mixture or a token cache against what it says it holds.

A mixture folder (``manifest.json``): every listed shard opens as a valid MMIDIDX pair, its sha256s
and counts match the manifest, every sample holds exactly seq_len + 1 tokens (layout ``documents``:
every entry is one document ending with its only EOS), totals add up; so for each held-out split's folder.
A cache folder (``cache.json``), or a folder of caches: every part's sha256s match, its document
table has one row per entry with the entry's token count, and the totals match the stats.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..errors import FormatError
from ..layout import CACHE_MANIFEST, MANIFEST, cache_manifest, cache_of, doc_table, manifest_path, shard_prefix
from ..mmidx import MMIDXReader
from ..storage import read_json

__all__ = ["verify_path", "sha256_file"]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with storage.open_read(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_path(path: str) -> list[str]:
    """Verify what ``path`` holds; returns one line per checked item, raises FormatError on a fault."""
    if storage.exists(manifest_path(path)):
        return list(_verify_mixture(path))
    if storage.exists(cache_manifest(path)):
        return list(_verify_cache(path))
    caches = sorted(cache_of(p) for p in _find(path, CACHE_MANIFEST))
    if caches:
        return [line for c in caches for line in _verify_cache(c)]
    if storage.exists(path + ".idx"):
        with MMIDXReader(path) as r:
            return [f"{path}: {len(r):,} sequences, {r.num_tokens:,} tokens: ok"]
    raise FormatError(f"{path}: nothing to verify: expected a mixture folder ({MANIFEST}), a token cache "
                      f"({CACHE_MANIFEST}), a folder of caches, or a .bin/.idx prefix.")


def _find(root: str, name: str) -> Iterator[str]:
    if storage.is_remote(root):
        from apache_beam.io.filesystems import FileSystems

        (match,) = FileSystems.match([storage.join(root, "**", name)])
        yield from (m.path for m in match.metadata_list)
        return
    for dirpath, _, files in os.walk(root):
        if name in files:
            yield os.path.join(dirpath, name)


def _check_sha(path: str, expected: str) -> None:
    if not storage.exists(path):
        raise FormatError(f"{path}: missing, though recorded with sha256 {expected}. Rebuild it (rerun the "
                          "command that wrote it).")
    found = sha256_file(path)
    if found != expected:
        raise FormatError(f"{path}: sha256 {found} does not match the recorded {expected}: the file changed "
                          "or is damaged. Rebuild it (rerun the command that wrote it).")


def _open_checked(prefix: str, record: dict) -> MMIDXReader:
    """Open a pair after checking both files against the sha256s recorded for them."""
    for ext in ("bin", "idx"):
        _check_sha(f"{prefix}.{ext}", record[f"{ext}_sha256"])
    return MMIDXReader(prefix)


def _verify_mixture(folder: str) -> Iterator[str]:
    manifest = read_json(manifest_path(folder))
    width = manifest["sample_tokens"]
    samples = tokens = 0
    for shard in manifest["shards"]:
        prefix = shard_prefix(folder, shard["prefix"])
        with _open_checked(prefix, shard) as r:
            lengths = r.sequence_lengths
            if len(r) != shard["sequences"]:
                raise FormatError(f"{prefix}.idx: {len(r)} sequences, manifest says {shard['sequences']}.")
            if manifest.get("layout") == "documents":
                _check_documents(prefix, r, manifest["tokenizer"]["eos_id"])
            else:
                bad = np.flatnonzero(lengths != width)
                if len(bad):
                    raise FormatError(f"{prefix}.idx: entry {bad[0]} has {lengths[bad[0]]} tokens; every sample "
                                      f"must have seq_len + 1 = {width}.")
            samples += len(r)
            tokens += r.num_tokens
        yield f"{prefix}: {shard['sequences']:,} samples: ok"
    totals = manifest["totals"]
    if samples != totals["samples"] or tokens != totals["written_tokens"]:
        raise FormatError(f"{manifest_path(folder)}: totals say {totals['samples']} samples / "
                          f"{totals['written_tokens']} tokens, the shards hold {samples} / {tokens}.")
    yield f"{folder}: {samples:,} samples, {tokens:,} tokens in {len(manifest['shards'])} shards: ok"
    for split in (manifest.get("held_out") or {}).values():
        if isinstance(split, dict) and "folder" in split:  # a held-out split: a mixture folder of its own
            yield from _verify_mixture(storage.join(folder, split["folder"]))


def _check_documents(prefix: str, reader: MMIDXReader, eos_id: int) -> None:
    """Layout ``documents``: every entry is one document copy, so it ends with the only EOS it holds
    (Megatron concatenates entries: an entry without its EOS would run into the next document)."""
    for i in range(len(reader)):
        tokens = reader[i]
        eos = np.flatnonzero(tokens == eos_id)
        if len(eos) != 1 or eos[0] != len(tokens) - 1:
            raise FormatError(f"{prefix}.bin: entry {i} ({len(tokens)} tokens) should be one document ending with "
                              f"EOS {eos_id}; found EOS at {eos[:5].tolist()}.")


def _verify_cache(folder: str) -> Iterator[str]:
    manifest = read_json(cache_manifest(folder))
    docs = tokens = 0
    for part in manifest["parts"]:
        prefix = storage.join(folder, part["part"])
        with _open_checked(prefix, part) as r:
            with storage.open_read(doc_table(prefix)) as f:
                table = pq.read_table(pa.BufferReader(f.read()), columns=["n_tokens"])
            n = table.column("n_tokens").to_numpy()
            if len(n) != len(r) or not np.array_equal(n.astype(np.int64), r.sequence_lengths.astype(np.int64)):
                raise FormatError(f"{doc_table(prefix)}: the document table ({len(n)} rows) does not match "
                                  f"the token file ({len(r)} entries) row for row.")
            docs += len(r)
            tokens += r.num_tokens
    stats = manifest["stats"]
    if docs != stats["documents"] or tokens != stats["tokens"]:
        raise FormatError(f"{cache_manifest(folder)}: stats say {stats['documents']} documents / {stats['tokens']} "
                          f"tokens, the parts hold {docs} / {tokens}.")
    yield f"{folder}: {manifest['source']}: {docs:,} documents, {tokens:,} tokens in {len(manifest['parts'])} parts: ok"
