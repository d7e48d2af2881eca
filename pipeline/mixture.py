"""Run a mixture end to end: files -> sample rules -> caches -> plan -> pack -> manifest and report.

    manifest = run_mixture(cfg, data_root="samples", out="out/stage1", cache_root="out/cache",
                           beam_args=["--runner=DirectRunner"])

Each step is one module, read here in the data's order:
- ``run.Run.start``: the tokenizer, and the input files of every source with weight > 0;
- ``sampling.estimate.sample_rules``: a quick estimate of each source decides which hold so much more
  than the mixture needs that only a sample of them is tokenized;
- ``cache.tokenizing.find_caches``: the token caches on disk that serve the sources (map-only: read,
  tokenize, write a cache part per input file, for the ones missing);
- ``mix.near.near_pairs``: with near dedup, a Beam job finding near-duplicate pairs in the caches;
- ``mix.planning.plan_mixture``: duplicates out (``mix.dedup``), then pure arithmetic on the caches'
  document tables, so an impossible request fails before the shards are touched;
- ``pack.PackShards``: routes the selected documents' references, groups them by shard and writes
  the shards; ``outputs.finish.finish``: the manifests, trainer files and report.

When no source is sampled, one Beam pipeline tokenizes, plans (on a worker, once every cache is
written) and packs (``one_pipeline``): one job to start, one set of workers, what a run on Dataflow
pays most for. With samples, the driver checks each sample against the plan and may top it up
(``sampling.driver``), so tokenizing and packing are two pipelines with the plan between; so too on
Dask, whose runner computes a side input once per task that reads it (``runners.one_job``).
"""

from __future__ import annotations

from typing import Sequence

from .cache import Readers
from .cache.tokenizing import find_caches
from .config import MixtureConfig
from .layout import prepare_output, prepare_splits
from .mix.near import near_pairs
from .mix.planning import Planned, plan_mixture
from .one_pipeline import tokenize_plan_pack
from .outputs.finish import finish
from .pack import PackShards
from .run import Run
from .sampling.driver import tokenize_samples
from .sampling.estimate import sample_rules
from .storage import remove_temporaries

__all__ = ["run_mixture", "prepare_outputs"]


def run_mixture(cfg: MixtureConfig, data_root: str, out: str, cache_root: str, beam_args: Sequence[str] = (),
                progress=None, plotter=None) -> dict:
    """Build the mixture ``cfg`` into ``out``; returns the manifest (also written as manifest.json).

    ``plotter``: an ``outputs.plotter.Plotter`` started earlier, which draws the report's plots."""
    with Readers() as readers:  # other runs on this cache root leave the samples it reads alone
        run = Run.start(cfg, data_root, cache_root, out, beam_args, progress, readers)
        rules = sample_rules(cfg, run.files, run.tokenizer)
        found, missing = find_caches(run, rules)
        if missing and run.one_job and not any(rules.values()) and not cfg.near_dedup:
            planned = tokenize_plan_pack(run, found, missing, prepare_outputs)
        else:
            caches, rules, candidates = tokenize_samples(run, rules, found, missing)
            near = near_pairs(run, caches, rules) if cfg.near_dedup else None  # a Beam job of its own
            planned = plan_mixture(cfg, run.tokenizer, caches, rules, out, candidates, near=near)
            _pack(run, planned)
        return finish(run, planned, plotter)


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
    """Before packing: the mixture's folder and each held-out split's readied (``layout.prepare_output``:
    stale shards, the manifest and a crashed run's plan note removed; a split no longer asked for loses
    an earlier run's shards)."""
    prepare_output(out, cfg.name, cfg.num_shards)
    prepare_splits(out, cfg.name, {split: cfg.split_shards(tokens) for split, tokens in cfg.held_out_tokens.items()
                                   if tokens})
