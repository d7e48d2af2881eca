"""One pipeline for a run that samples nothing: tokenize, plan on a worker once every cache is written, pack.

One job to start and one set of workers: what a run on Dataflow pays most for. The plan step runs
``planning.plan_mixture`` on a worker and writes its decision to ``OUT/_plan.json`` (the progress
display reads the plan hash and tokens from it; the driver builds the same plan from it, checked by
its hash, and removes it). The pack stage reads the plan step's ``Packing`` as a side input. Not on
Dask, whose runner computes a side input once per task that reads it (``runners.one_job``).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import apache_beam as beam

from . import storage
from .cache import BuildCaches, TokenCache
from .cache.tokenizing import Missing, build_caches, built_caches, tell_tokenizing, tokenize_label
from .config import MixtureConfig, config_hash
from .layout import plan_path, shard_names
from .mix.plan import PlanError
from .mix.planning import Planned, plan_from_note, plan_mixture
from .pack import Packing, PackShards
from .run import Run
from .storage import make_dirs, read_json, remove_temporaries, write_json
from .tokenizer import LoadedTokenizer

__all__ = ["PlanStep", "tokenize_plan_pack", "tokenize_plan_pack_transforms"]


def tokenize_plan_pack(run: Run, found: dict[str, TokenCache], missing: Sequence[Missing], prepare) -> Planned:
    """Run the one pipeline; returns its plan. ``prepare(out, cfg)``: readies the output folders (on
    the worker, once the plan is known)."""
    build = build_caches(run, missing)
    directories = {**{n: c.directory for n, c in found.items()}, **build.directories}
    plan_file = plan_path(run.out)  # the plan step's decision (``Planned.note``) or its error
    make_dirs(run.out)  # before tokenizing: an output that cannot be written stops the run now
    storage.delete(plan_file)  # a crashed run's: the progress display would trust it
    remove_temporaries(run.out)  # here, not in the plan step: a retried step must not remove a duplicate's files
    step = PlanStep(run.cfg, run.tokenizer, directories, run.out, prepare)
    try:
        with run.pipeline() as p:
            _ = tokenize_plan_pack_transforms(p, build, step, run.cfg.name, tuple(run.cfg.held_out_tokens))
            tell_tokenizing(run, build, missing)
            if run.progress:
                run.progress.packing_when_planned(run.out, shard_names(run.cfg.name, run.cfg.num_shards), plan_file)
    except Exception:
        # The plan step's own error (an impossible request, say) reaches us wrapped by the runner.
        note = read_json(plan_file) if storage.exists(plan_file) else {}
        if "error" in note:
            raise PlanError(note["error"]) from None
        raise
    caches = {**found, **built_caches(build, run.readers)}
    planned = plan_from_note(run.cfg, run.tokenizer, caches, {n: None for n in caches}, run.out, read_json(plan_file),
                             plan_file)
    storage.delete(plan_file)
    return planned


def tokenize_plan_pack_transforms(p: beam.Pipeline, build: BuildCaches, step: PlanStep, name: str,
                                  splits: Sequence[str] = ()):
    """The one pipeline's transforms: caches -> plan (once all are written) -> shard records.

    ``splits``: the held-out splits; the plan step gives each its ``Packing`` as a tagged output.
    """
    plan = beam.ParDo(step).with_outputs(*splits) if splits else beam.ParDo(step)
    packing = (
        p
        | tokenize_label(build) >> build
        | "AllCachesWritten" >> beam.combiners.ToList()  # the plan needs every cache
        | "Plan" >> plan
    )
    for split in splits:
        _ = packing[split] | f"PackShards[{name}-{split}]" >> PackShards()
    return (packing[None] if splits else packing) | f"PackShards[{name}]" >> PackShards()


class PlanStep(beam.DoFn):
    """The plan step: [finished cache manifests] -> ``Packing`` (on a worker)."""

    def __init__(self, cfg: MixtureConfig, tokenizer: LoadedTokenizer, directories: dict[str, str], out: str,
                 prepare):
        # The config's hash from here: a worker needs no local path, not even the tokenizer's name
        # (nor its tokenizer.json: planning does not encode).
        self._cfg, self._config_sha = dataclasses.replace(cfg, origin="", tokenizer=""), config_hash(cfg)
        self._tokenizer, self._directories, self._out, self._prepare = tokenizer.about(), directories, out, prepare

    def process(self, _written: list) -> Iterator[Packing]:
        caches = {n: TokenCache(d) for n, d in self._directories.items()}
        try:
            planned = plan_mixture(self._cfg, self._tokenizer, caches, {n: None for n in caches}, self._out,
                                   config_sha=self._config_sha)
        except PlanError as e:  # for the driver: the runner wraps what a step raises
            write_json(plan_path(self._out), {"error": str(e)})
            raise
        self._prepare(self._out, self._cfg)
        write_json(plan_path(self._out), planned.note())
        yield planned.packing
        for split, split_pack in planned.splits.items():
            yield beam.pvalue.TaggedOutput(split, split_pack)
