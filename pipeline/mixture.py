"""Run a mixture end to end: tokenize what the caches lack, plan, select, pack, write the manifest.

    manifest = run_mixture(cfg, data_root="samples", out="out/stage1", cache_root="out/cache",
                           beam_args=["--runner=DirectRunner"])

Two Beam pipelines: one builds the missing token caches (map-only: read, tokenize, write per input
file), one packs the shards (route references, group by shard, write). Between them the driver plans
the mixture from the caches' document tables: pure arithmetic, so impossible requests fail before the
shards are touched.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from apache_beam.io.filesystems import FileSystems

from . import __version__
from .crashpoints import crash_point
from .errors import SourceError
from .cache import BuildCache, TokenCache
from .config import MixtureConfig, config_hash
from .manifest import build_manifest, neox_config, summary_table
from .pack import PackShards, shard_name
from .plan import SourcePlan, make_plan
from .select import BucketSelection, select_source
from .sources import list_source_files
from .storage import make_dirs, read_json, remove_temporaries, write_json
from .tokenizer import LoadedTokenizer, load_tokenizer

__all__ = ["tokenize_sources", "run_mixture", "available_by_bucket"]

log = logging.getLogger("mixprep")


def tokenize_sources(
    cfg: MixtureConfig, data_root: str, cache_root: str, tokenizer: LoadedTokenizer, beam_args: Sequence[str]
) -> dict[str, TokenCache]:
    """Token caches for every source with weight > 0, building the missing ones in one pipeline."""
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
        builds = {}
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            for s, files in missing:
                build = BuildCache(s.spec, files, tokenizer, cache_root)
                builds[s.name] = build
                _ = p | f"TokenizeSource[{s.name}]" >> build
        for name, build in builds.items():
            caches[name] = TokenCache(build.directory)
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
    cfg: MixtureConfig, data_root: str, out: str, cache_root: str, beam_args: Sequence[str] = ()
) -> dict:
    """Build the mixture ``cfg`` into ``out``; returns the manifest (also written as manifest.json)."""
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    caches = tokenize_sources(cfg, data_root, cache_root, tokenizer, beam_args)
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
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        _ = p | f"PackShards[{cfg.name}]" >> PackShards(
            cfg.name, names, [caches[n].directory for n in names], [len(caches[n].parts) for n in names],
            bounds, [selections[n] for n in names], cfg.seed, m, cfg.seq_len, tokenizer.dtype, out, plan_hash,
        )
    shards = [read_json(os.path.join(out, "_shards", shard_name(cfg.name, i, m) + ".json")) for i in range(m)]
    manifest = build_manifest(cfg, tokenizer, plans, selections, {n: caches[n] for n in names}, shards, plan_hash)
    write_json(os.path.join(out, "gpt-neox-data.json"), neox_config(manifest, out))
    crash_point(f"before-manifest:{cfg.name}")
    write_json(os.path.join(out, "manifest.json"), manifest)  # last: its presence means complete
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


def _remove_stale_shards(out: str, name: str, count: int) -> None:
    """A previous run with another shard count would leave shards the manifest does not list."""
    keep = {shard_name(name, i, count) for i in range(count)}
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        os.remove(manifest)
    for path in glob.glob(os.path.join(out, f"{name}-*-of-*.*")) + glob.glob(os.path.join(out, "_shards", "*.json")):
        if os.path.basename(path).rsplit(".", 1)[0] not in keep:
            os.remove(path)
