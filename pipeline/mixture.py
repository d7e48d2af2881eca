"""Run a mixture end to end: tokenize what the caches lack, plan, select, pack, write the manifest.

    manifest = run_mixture(cfg, data_root="samples", out="out/stage1", cache_root="out/cache",
                           beam_args=["--runner=DirectRunner"])

Two Beam pipelines: one builds the missing token caches (map-only: read, tokenize, write per input
file), one packs the shards (route references, group by shard, write). Between them the driver plans
the mixture from the caches' document tables: pure arithmetic, so impossible requests fail before the
shards are touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from . import __version__, storage
from .cache import BuildCaches, TokenCache
from .config import MixtureConfig, config_hash
from .crashpoints import crash_point
from .errors import OutputError, SourceError
from .manifest import build_manifest, neox_config, summary_table
from .pack import PROVENANCE_DIR, PackShards, shard_name
from .plan import make_plan
from .report import write_report
from .select import select_source
from .sources import list_source_files
from .storage import make_dirs, read_json, remove_temporaries, write_json
from .tokenizer import LoadedTokenizer, load_tokenizer

__all__ = ["tokenize_sources", "run_mixture", "available_by_bucket"]

log = logging.getLogger("mixprep")


def tokenize_sources(
    cfg: MixtureConfig, data_root: str, cache_root: str, tokenizer: LoadedTokenizer, beam_args: Sequence[str],
    progress=None,
) -> dict[str, TokenCache]:
    """Token caches for every source with weight > 0, building the missing ones in one pipeline.

    ``progress`` (optional, ``progress.Progress``) is told what is built and gets the pipeline's result.
    """
    FileSystems.set_options(PipelineOptions(list(beam_args)))  # listing may need e.g. S3 options
    caches: dict[str, TokenCache] = {}
    missing = []
    for i, s in enumerate(cfg.sources):
        if s.weight <= 0:
            continue
        try:
            files = list_source_files(s.spec, data_root)
        except SourceError as e:
            raise SourceError(f"{cfg.origin or 'mixture'}: sources[{i}] ({s.name}): {e}") from None
        cache = TokenCache.find(cache_root, s.spec, files, tokenizer)
        if cache is not None:
            log.info("source %s: reusing token cache %s", s.name, cache.directory)
            caches[s.name] = cache
        else:
            missing.append((s, files))
    if missing:
        log.info("tokenizing %s", ", ".join(f"{s.name} ({len(f)} files)" for s, f in missing))
        # One stage for every source: workers take files from all of them, so none idles on a tail.
        build = BuildCaches([(s.spec, files) for s, files in missing], tokenizer, cache_root)
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            _ = p | f"TokenizeSources[{','.join(s.name for s, _ in missing)}]" >> build
            if progress:
                progress.tokenizing([(s.name, build.directories[s.name], files) for s, files in missing])
        if progress:
            progress.finished(p.result)
        for name, directory in build.directories.items():
            caches[name] = TokenCache(directory)
    return caches


def available_by_bucket(cache: TokenCache, bounds: Sequence[int]) -> tuple[list[int], list[int]]:
    """Exact (tokens, documents) per length bucket, from the document tables."""
    tokens = np.zeros(len(bounds) + 1, dtype=np.int64)
    docs = np.zeros(len(bounds) + 1, dtype=np.int64)
    for part in range(len(cache.parts)):
        n = cache.doc_table(part, columns=["n_tokens"]).column("n_tokens").to_numpy().astype(np.int64)
        b = np.searchsorted(np.asarray(bounds, dtype=np.int64), n, side="right")
        tokens += np.bincount(b, weights=n, minlength=len(tokens)).astype(np.int64)
        docs += np.bincount(b, minlength=len(docs))
    return tokens.tolist(), docs.tolist()


def run_mixture(
    cfg: MixtureConfig, data_root: str, out: str, cache_root: str, beam_args: Sequence[str] = (), progress=None
) -> dict:
    """Build the mixture ``cfg`` into ``out``; returns the manifest (also written as manifest.json)."""
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    caches = tokenize_sources(cfg, data_root, cache_root, tokenizer, beam_args, progress)
    bounds = cfg.bucket_bounds
    available = {name: available_by_bucket(c, bounds) for name, c in caches.items()}
    plans = make_plan(cfg, available)
    selections = {
        p.source: select_source(
            caches[p.source], p.source, bounds, [b.target_tokens for b in p.buckets],
            [b.available_tokens for b in p.buckets], cfg.seed,
        )
        for p in plans
    }
    plan_hash = _plan_hash(cfg, tokenizer, caches, selections)
    names = [p.source for p in plans]
    m = cfg.num_shards
    make_dirs(out)
    _remove_stale_shards(out, cfg.name, m)
    remove_temporaries(out)  # a crashed run's half-written files (never under a final name)
    if progress:
        progress.packing(out, [shard_name(cfg.name, i, m) for i in range(m)], plan_hash,
                         sum(s.selected_tokens for sel in selections.values() for s in sel))
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        _ = p | f"PackShards[{cfg.name}]" >> PackShards(
            cfg.name, names, [caches[n].directory for n in names], [len(caches[n].parts) for n in names],
            bounds, [selections[n] for n in names], cfg.seed, m, cfg.seq_len, tokenizer.dtype, out, plan_hash,
        )
    if progress:
        progress.finished(p.result)
    shards = _written_shards(out, cfg.name, m, plan_hash)
    manifest = build_manifest(cfg, tokenizer, plans, selections, {n: caches[n] for n in names}, shards, plan_hash)
    write_json(storage.join(out, "gpt-neox-data.json"), neox_config(manifest, out))
    crash_point(f"before-manifest:{cfg.name}")
    write_json(storage.join(out, "manifest.json"), manifest)  # last: its presence means complete
    write_report(out, manifest, cache_root)  # report.md + plots, from the manifest and the caches
    print(summary_table(manifest))
    return manifest


def _plan_hash(cfg, tokenizer, caches, selections) -> str:
    key = {
        "mixprep": __version__,
        "config": config_hash(cfg),
        "tokenizer": tokenizer.sha256,
        "caches": {n: c.manifest["fingerprint"] for n, c in sorted(caches.items())},
        "selections": {n: [s.to_dict() for s in sel] for n, sel in sorted(selections.items())},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _written_shards(out: str, name: str, count: int, plan_hash: str) -> list[dict]:
    """Every promised shard's record; a missing or stale one is an error, never a short manifest."""
    shards = []
    for i in range(count):
        shard = shard_name(name, i, count)
        sidecar = storage.join(out, "_shards", shard + ".json")
        record = read_json(sidecar) if storage.exists(sidecar) else None
        if record is None or record.get("plan_hash") != plan_hash or not all(
            storage.exists(storage.join(out, shard + ext)) for ext in (".bin", ".idx")
        ):
            raise OutputError(storage.join(out, shard + ".bin"),
                              RuntimeError("the pack pipeline finished without writing this shard"))
        shards.append(record)
    return shards


def _remove_stale_shards(out: str, name: str, count: int) -> None:
    """A previous run with another shard count would leave shards the manifest does not list."""
    keep = {shard_name(name, i, count) for i in range(count)}
    storage.delete(storage.join(out, "manifest.json"))
    stale = storage.list_files(out, f"{name}-*-of-*.*")
    for folder in ("_shards", PROVENANCE_DIR):
        stale += storage.list_files(storage.join(out, folder), "*")
    for path in stale:
        if path.rsplit("/", 1)[-1].split(".", 1)[0] not in keep:
            storage.delete(path)
