"""Run a mixture end to end: files -> sample rules -> caches -> plan -> pack -> manifest and report.

    manifest = run_mixture(cfg, data_root="samples", out="out/stage1", cache_root="out/cache",
                           beam_args=["--runner=DirectRunner"])

Each step is one module, read here in the data's order:
- ``run.Run.start``: the tokenizer, and the input files of every source with weight > 0;
- ``sampling.estimate.sample_rules``: a quick estimate of each source decides which hold so much more
  than the mixture needs that only a sample of them is tokenized;
- ``tokenizing.find_caches``: the token caches on disk that serve the sources (map-only: read,
  tokenize, write a cache part per input file, for the ones missing);
- ``planning.plan_mixture``: pure arithmetic on the caches' document tables, so an impossible
  request fails before the shards are touched;
- ``pack.PackShards``: routes the selected documents' references, groups them by shard and writes
  the shards; ``finish.finish``: the manifests, trainer files and report.

When no source is sampled, one Beam pipeline tokenizes, plans (on a worker, once every cache is
written) and packs (``one_pipeline``): one job to start, one set of workers, what a run on Dataflow
pays most for. With samples, the driver checks each sample against the plan and may top it up
(``sampling.driver``), so tokenizing and packing are two pipelines with the plan between; so too on
Dask, whose runner computes a side input once per task that reads it (``runners.one_job``).
"""

from __future__ import annotations

from typing import Sequence

from . import storage
from .cache import Readers
from .config import MixtureConfig
from .outputs.finish import finish
from .mix.held_out import SPLIT_FOLDERS
from .one_pipeline import PLAN_FILE, tokenize_plan_pack
from .pack import PROVENANCE_DIR, PackShards, shard_names
from .mix.planning import Planned, plan_mixture
from .run import Run
from .sampling.driver import tokenize_samples
from .sampling.estimate import sample_rules
from .storage import make_dirs, remove_temporaries
from .cache.tokenizing import find_caches

__all__ = ["run_mixture", "prepare_outputs"]


def run_mixture(cfg: MixtureConfig, data_root: str, out: str, cache_root: str, beam_args: Sequence[str] = (),
                progress=None) -> dict:
    """Build the mixture ``cfg`` into ``out``; returns the manifest (also written as manifest.json)."""
    with Readers() as readers:  # other runs on this cache root leave the samples it reads alone
        run = Run.start(cfg, data_root, cache_root, out, beam_args, progress, readers)
        rules = sample_rules(cfg, run.files, run.tokenizer)
        found, missing = find_caches(run, rules)
        if missing and run.one_job and not any(rules.values()):
            planned = tokenize_plan_pack(run, found, missing, prepare_outputs)
        else:
            caches, rules, candidates = tokenize_samples(run, rules, found, missing)
            planned = plan_mixture(cfg, run.tokenizer, caches, rules, out, candidates)
            _pack(run, planned)
        return finish(run, planned)


def _pack(run: Run, planned: Planned) -> None:
    """The pack pipeline: training's shards and each held-out split's."""
    packing = planned.packing
    prepare_outputs(run.out, run.cfg)
    remove_temporaries(run.out)  # a crashed run's half-written files (never under a final name)
    if run.progress:
        run.progress.packing(run.out, packing.shard_names(), packing.plan_hash, packing.selected_tokens)
    with run.pipeline() as p:
        _ = p | f"PackShards[{run.cfg.name}]" >> PackShards(packing)
        for split_pack in planned.splits.values():
            _ = p | f"PackShards[{split_pack.mixture}]" >> PackShards(split_pack)


def prepare_outputs(out: str, cfg: MixtureConfig) -> None:
    """Before packing: the mixture's folder and each held-out split's readied (``_prepare_out``); a
    split no longer asked for is removed (an earlier run's), so the folder holds only what this
    manifest lists."""
    _prepare_out(out, cfg.name, cfg.num_shards)
    for split in SPLIT_FOLDERS:
        folder, name = storage.join(out, split), f"{cfg.name}-{split}"
        tokens = cfg.held_out_tokens.get(split)
        if tokens:
            _prepare_out(folder, name, cfg.split_shards(tokens))
        elif storage.exists(storage.join(folder, "manifest.json")) or storage.list_files(folder, f"{name}-*-of-*.*"):
            _remove_stale_shards(folder, name, 0)


def _prepare_out(out: str, name: str, count: int) -> None:
    """Before packing: no manifest (the folder is incomplete until the new one), no other run's shards."""
    make_dirs(out)
    _remove_stale_shards(out, name, count)
    storage.delete(storage.join(out, PLAN_FILE))  # and a crashed one-pipeline run's plan note


def _remove_stale_shards(out: str, name: str, count: int) -> None:
    """A previous run with another shard count would leave shards the manifest does not list."""
    keep = set(shard_names(name, count))
    storage.delete(storage.join(out, "manifest.json"))
    stale = storage.list_files(out, f"{name}-*-of-*.*")
    for folder in ("_shards", PROVENANCE_DIR):
        stale += storage.list_files(storage.join(out, folder), "*")
    for path in stale:
        if path.rsplit("/", 1)[-1].split(".", 1)[0] not in keep:
            storage.delete(path)
