"""Run a mixture end to end: tokenize what the caches lack, plan, select, pack, write the manifest.

    manifest = run_mixture(cfg, data_root="samples", out="out/stage1", cache_root="out/cache",
                           beam_args=["--runner=DirectRunner"])

Tokenizing builds the missing token caches (map-only: read, tokenize, write per input file);
packing routes the selected documents' references, groups them by shard and writes the shards.
Between them the plan (``plan_packing``) is pure arithmetic on the caches' document tables, so an
impossible request fails before the shards are touched. Before them, a quick estimate of each
source decides which sources hold so much more than the mixture needs that only a sample of them is
tokenized (sampling.py).

When no source is sampled, one Beam pipeline does all three: the plan step runs on a worker once
every cache is written, and the pack stage reads its result as a side input (one job to start, one
set of workers: what a run on Dataflow pays most for). With samples, the driver checks each sample
against the plan and may top it up, so tokenizing and packing are two pipelines with the plan between;
so too on Dask, whose runner computes a side input once per task that reads it (``runners.one_job``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Iterator, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from . import __version__, storage
from .bundled import tokenizer_warnings
from .cache import BuildCaches, Readers, TokenCache, remove_covered_samples
from .config import MixtureConfig, config_hash
from .crashpoints import crash_point
from .errors import OutputError, SourceError
from .megatron import write_megatron_args
from .held_out import (SPLIT_FOLDERS, TRAIN, HeldOut, documents_per_split, held_out_targets, remaining,
                       select_held_out, source_split_tokens, split_packing, split_plans, split_rule)
from .manifest import (NEOX_FILE, TOKENIZER_FILE, build_manifest, held_out_section, neox_config, split_manifest,
                       summary_table)
from .pack import PROVENANCE_DIR, Packing, PackShards, shard_names
from .plan import bucket_targets, make_plan, split_exact
from .report import write_report
from .runners import one_job
from .estimate import length_groups, sample_rules
from .sampling import MIN_HOLDS, TOP_UPS, SampleRule
from .select import BucketSelection, candidates_by_bucket, rule_tokens, select_source, selected_by_subset
from .plan import SourcePlan
from .sources import SourceFile, list_source_files
from .storage import atomic_writer, make_dirs, read_json, remove_temporaries, write_json
from .tokenizer import LoadedTokenizer, TokenizerInfo, load_tokenizer
from .topup import SampleView, predict_top_up

__all__ = ["tokenize_sources", "run_mixture", "plan_packing", "PLAN_FILE"]

# Written by the plan step of a one-pipeline run: its plan hash and selected tokens (the progress
# display), candidates and selections (the driver's manifest, without reading every document table
# again). Removed when the run ends.
PLAN_FILE = "_plan.json"

log = logging.getLogger("mixprep")


def mixed_source_files(cfg: MixtureConfig, data_root: str, beam_args: Sequence[str] = ()) -> dict[str, list[SourceFile]]:
    """The input files of every source with weight > 0; a glob that matches nothing names the source."""
    FileSystems.set_options(PipelineOptions(list(beam_args)))  # listing may need e.g. S3 options
    out = {}
    for i, s in enumerate(cfg.sources):
        if s.weight <= 0:
            continue
        try:
            out[s.name] = list_source_files(s.spec, data_root)
        except SourceError as e:
            raise SourceError(f"{cfg.origin or 'mixture'}: sources[{i}] ({s.name}): {e}") from None
    return out


def tokenize_sources(
    cfg: MixtureConfig, data_root: str, cache_root: str, tokenizer: LoadedTokenizer, beam_args: Sequence[str],
    progress=None, rules: dict[str, SampleRule | None] | None = None, files: dict[str, list[SourceFile]] | None = None,
    earlier: dict[str, str] | None = None, readers: Readers | None = None,
) -> dict[str, TokenCache]:
    """Token caches for every source with weight > 0, building the missing ones in one pipeline.

    ``rules`` (from ``sample_rules``) tokenize only a sample of some sources; a cache of the whole
    source, or of a sample whose rule covers theirs, serves them too (it holds every document the
    rule would tokenize). ``earlier``: per source, a sampled cache that its new rule covers (a top-up
    copies its documents). A cache built here removes the samples of the same files it covers, but
    not those another run reads; ``readers`` marks the sampled caches this run reads (until it closes).
    ``progress`` (optional, ``progress.Progress``) is told what is built and gets the pipeline's result.
    """
    files = files if files is not None else mixed_source_files(cfg, data_root, beam_args)
    caches, missing = _find_caches(cfg, cache_root, tokenizer, rules or {}, files, readers)
    if missing:
        build = _build_caches(missing, tokenizer, cache_root, earlier)
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            _ = p | _tokenize_label(build) >> build
            if progress:
                progress.tokenizing([(s.name, build.directories[s.name], f) for s, f, _ in missing])
        if progress:
            progress.finished(p.result)
        caches.update(_built(build, readers))
    return caches


def _find_caches(cfg, cache_root, tokenizer, rules, files, readers) -> tuple[dict[str, TokenCache], list[tuple]]:
    """The caches found for the mixed sources, and (source, files, rule) of those still to build."""
    caches, missing = {}, []
    for s in cfg.sources:
        if s.weight <= 0 or s.name not in files:
            continue
        rule = rules.get(s.name)
        cache = TokenCache.find(cache_root, s.spec, files[s.name], tokenizer, rule)
        if cache is not None:
            log.info("source %s: reusing token cache %s", s.name, cache.directory)
            if readers is not None:
                readers.add(cache)
            caches[s.name] = cache
        else:
            missing.append((s, files[s.name], rule))
    return caches, missing


def _build_caches(missing, tokenizer, cache_root, earlier=None) -> BuildCaches:
    log.info("tokenizing %s", ", ".join(f"{s.name} ({len(f)} files{', a sample' if r else ''})" for s, f, r in missing))
    # One stage for every source: workers take files from all of them, so none idles on a tail.
    return BuildCaches([(s.spec, f, r) for s, f, r in missing], tokenizer, cache_root, earlier)


def _tokenize_label(build: BuildCaches) -> str:
    return f"TokenizeSources[{','.join(build.directories)}]"


def _built(build: BuildCaches, readers: Readers | None) -> dict[str, TokenCache]:
    """The caches a finished pipeline built; each removes the samples it covers.

    And the temporary files left in them by attempts that died (a killed worker's, a crashed run's):
    here, on the driver once the job has ended, since no attempt of a step can still be writing.
    """
    caches = {}
    for name, directory in build.directories.items():
        remove_temporaries(directory)
        caches[name] = TokenCache(directory)
        if readers is not None:
            readers.add(caches[name])
        for gone in remove_covered_samples(caches[name]):  # a top-up's first sample, say
            log.info("source %s: removed token cache %s: %s holds all of it", name, gone, directory)
    return caches


def run_mixture(
    cfg: MixtureConfig, data_root: str, out: str, cache_root: str, beam_args: Sequence[str] = (), progress=None
) -> dict:
    """Build the mixture ``cfg`` into ``out``; returns the manifest (also written as manifest.json)."""
    with Readers() as readers:  # other runs on this cache root leave the samples it reads alone
        return _run_mixture(cfg, data_root, out, cache_root, beam_args, progress, readers)


def _run_mixture(cfg: MixtureConfig, data_root: str, out: str, cache_root: str, beam_args: Sequence[str], progress,
                 readers: Readers) -> dict:
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    for warning in tokenizer_warnings(cfg.named_tokenizer, cfg.tokenizer, tokenizer.sha256, cfg.total_tokens):
        log.warning("%s", warning)  # and in the manifest's tokenizer section
    files = mixed_source_files(cfg, data_root, beam_args)
    rules = sample_rules(cfg, files, tokenizer)
    candidates = None
    if any(rules.values()):
        caches, candidates = _tokenize_samples(cfg, tokenizer, data_root, cache_root, beam_args, progress, files, rules,
                                               readers)
    elif not one_job(beam_args):  # a runner that recomputes side inputs (Dask): plan once, on the driver
        caches = tokenize_sources(cfg, data_root, cache_root, tokenizer, beam_args, progress, rules, files,
                                  readers=readers)
    else:
        caches, missing = _find_caches(cfg, cache_root, tokenizer, rules, files, readers)
        if missing:
            caches.update(_tokenize_and_pack(cfg, tokenizer, out, cache_root, beam_args, progress, caches, missing,
                                             readers))
            planned = _read_plan(cfg, tokenizer, caches, rules, out)
            return _finish(cfg, tokenizer, out, cache_root, caches, rules, planned)
    planned = plan_packing(cfg, tokenizer, caches, rules, out, candidates=candidates)
    packing = planned.packing
    _prepare_out(out, cfg.name, cfg.num_shards)
    _prepare_splits(out, cfg)
    remove_temporaries(out)  # a crashed run's half-written files (never under a final name)
    if progress:
        progress.packing(out, packing.shard_names(), packing.plan_hash, packing.selected_tokens)
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        _ = p | f"PackShards[{cfg.name}]" >> PackShards(packing)
        for split, split_pack in planned.splits.items():
            _ = p | f"PackShards[{split_pack.mixture}]" >> PackShards(split_pack)
    if progress:
        progress.finished(p.result)
    return _finish(cfg, tokenizer, out, cache_root, caches, rules, planned)


def _tokenize_samples(cfg, tokenizer, data_root, cache_root, beam_args, progress, files, rules, readers) -> tuple:
    """(caches, their candidates) for a run that samples some sources: each sample is checked against
    the plan and, when short of a bucket's target, topped up (rules change in place)."""
    bounds = cfg.bucket_bounds
    caches = tokenize_sources(cfg, data_root, cache_root, tokenizer, beam_args, progress, rules, files, readers=readers)
    candidates = _candidates(caches, bounds, rules)
    plans = _plan(cfg, rules, candidates)
    # A sample short of some bucket's target (sampling.py: a first one aims low): top it up, with
    # rates predicted from what the first pass read (topup.py); a source that cannot be topped up, or is still
    # short after TOP_UPS, is tokenized whole. Plan again after each.

    def tokenize_again(new_rules: dict) -> list:
        # A top-up copies the sample it grows (its cache may be a larger one found on disk: then only if covered).
        earlier = {n: caches[n].directory for n, r in new_rules.items()
                   if r is not None and caches[n].rule is not None and r.covers(caches[n].rule)}
        rules.update(new_rules)
        caches.update(tokenize_sources(cfg, data_root, cache_root, tokenizer, beam_args, progress, rules,
                                       {n: files[n] for n in new_rules}, earlier, readers))
        candidates.update({n: candidates_by_bucket(caches[n], bounds, rules[n]) for n in new_rules})
        return _plan(cfg, rules, candidates)

    groups = length_groups(cfg)
    for _ in range(TOP_UPS):
        needs = _needs(cfg, plans, rules, candidates)
        short = _short(needs, rules, candidates)
        raised = {p.source: _top_up(cfg, p, rules[p.source], caches[p.source], candidates[p.source], groups,
                                    needs[p.source]) for p in plans if p.source in short}
        if not (raised := {n: r for n, r in raised.items() if r is not None and r != rules[n]}):
            break  # nothing to top up: a source still short is tokenized whole
        log.info("sources %s: the sample is short of a bucket's target (a first one aims low); topping it up",
                 ", ".join(raised))
        plans = tokenize_again(raised)
    if short := _short(_needs(cfg, plans, rules, candidates), rules, candidates):
        log.warning("sources %s: their samples cannot be topped up or fall short; tokenizing them whole", ", ".join(short))
        tokenize_again({n: None for n in short})
    return caches, candidates


def _top_up(cfg, p, rule: SampleRule, cache: TokenCache, candidates, groups, needs) -> SampleRule | None:
    """``rule`` raised so that its candidates meet the plan (topup.py), or None: tokenize whole."""
    bounds = cfg.bucket_bounds
    short = [b.index for b in p.buckets if needs[b.index] > candidates[0][b.index]]
    held = source_split_tokens(cfg, p.source)

    def needs_of(available) -> list[int]:  # as _needs counts them: training's targets and the splits'
        out = bucket_targets(p.target_tokens, available, bounds, cfg.long_policy(p.source))
        for tokens in held:
            out = [a + b for a, b in zip(out, split_exact(tokens, [round(x) for x in available]))]
        return out

    rates = predict_top_up(rule.rates, groups, short, SampleView.of(cache, bounds, rule), bounds, needs_of, MIN_HOLDS)
    return None if rates is None else dataclasses.replace(rule, rates=rates)


def _tokenize_and_pack(cfg, tokenizer, out, cache_root, beam_args, progress, found, missing, readers) -> dict:
    """One pipeline for a run that samples nothing: tokenize ``missing``, plan on a worker once every
    cache is written, pack. Returns the caches it built."""
    build = _build_caches(missing, tokenizer, cache_root)
    directories = {**{n: c.directory for n, c in found.items()}, **build.directories}
    step = _PlanStep(cfg, tokenizer, directories, out)
    make_dirs(out)  # before tokenizing: an output that cannot be written stops the run now
    storage.delete(storage.join(out, PLAN_FILE))  # a crashed run's: the progress display would trust it
    remove_temporaries(out)  # here, not in the plan step: a retried step must not remove a duplicate's files
    try:
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            _ = tokenize_plan_pack(p, build, step, cfg.name, tuple(cfg.held_out_tokens))
            if progress:
                progress.tokenizing([(s.name, build.directories[s.name], f) for s, f, _ in missing])
                progress.packing_when_planned(out, shard_names(cfg.name, cfg.num_shards), storage.join(out, PLAN_FILE))
    except Exception:
        # The plan step's own error (an impossible request, say) reaches us wrapped by the runner:
        # planning again here raises it as itself.
        if all(storage.exists(storage.join(d, "cache.json")) for d in directories.values()):
            plan_packing(cfg, tokenizer, {n: TokenCache(d) for n, d in directories.items()},
                         {n: None for n in directories}, out)
        raise
    if progress:
        progress.finished(p.result)
    return _built(build, readers)


def tokenize_plan_pack(p: beam.Pipeline, build: BuildCaches, step: _PlanStep, name: str, splits: Sequence[str] = ()):
    """The one-pipeline run's transforms: caches -> plan (once all are written) -> shard records.

    ``splits``: the held-out splits; the plan step gives each its ``Packing`` as a tagged output.
    """
    plan = beam.ParDo(step).with_outputs(*splits) if splits else beam.ParDo(step)
    packing = (
        p
        | _tokenize_label(build) >> build
        | "AllCachesWritten" >> beam.combiners.ToList()  # the plan needs every cache
        | "Plan" >> plan
    )
    for split in splits:
        _ = packing[split] | f"PackShards[{name}-{split}]" >> PackShards()
    return (packing[None] if splits else packing) | f"PackShards[{name}]" >> PackShards()


class _PlanStep(beam.DoFn):
    """The one-pipeline run's plan step: [finished cache manifests] -> ``Packing`` (on a worker)."""

    def __init__(self, cfg: MixtureConfig, tokenizer: LoadedTokenizer, directories: dict[str, str], out: str):
        # The config's hash from here: a worker needs no local path, not even the tokenizer's name
        # (nor its tokenizer.json: planning does not encode).
        self._cfg, self._config_sha = dataclasses.replace(cfg, origin="", tokenizer=""), config_hash(cfg)
        self._tokenizer, self._directories, self._out = tokenizer.about(), directories, out

    def process(self, _written: list) -> Iterator[Packing]:
        caches = {n: TokenCache(d) for n, d in self._directories.items()}
        rules = {n: None for n in caches}
        candidates = _candidates(caches, self._cfg.bucket_bounds, rules)
        planned = plan_packing(self._cfg, self._tokenizer, caches, rules, self._out, self._config_sha, candidates)
        packing = planned.packing
        _prepare_out(self._out, self._cfg.name, self._cfg.num_shards)
        _prepare_splits(self._out, self._cfg)
        note = {"plan_hash": packing.plan_hash, "tokens": packing.selected_tokens, "candidates": candidates,
                "selections": {n: [s.to_dict() for s in sel] for n, sel in planned.selections.items()}}
        if planned.held_out:
            note["held_out"] = {split: {n: [s.to_dict() for s in sel] for n, sel in per_source.items()}
                                for split, per_source in planned.held_out.items()}
        write_json(storage.join(self._out, PLAN_FILE), note)
        yield packing
        for split, split_pack in planned.splits.items():
            yield beam.pvalue.TaggedOutput(split, split_pack)


def _read_plan(cfg, tokenizer, caches, rules, out) -> Planned:
    """``plan_packing``'s result from the plan step's file (then removed), checked by its hash."""
    path = storage.join(out, PLAN_FILE)
    written = read_json(path)
    selections = {n: [BucketSelection.from_dict(d) for d in sel] for n, sel in written["selections"].items()}
    noted = written.get("held_out", {})
    held_out = {split: {n: tuple(BucketSelection.from_dict(d) for d in sel) for n, sel in noted[split].items()}
                for split in SPLIT_FOLDERS if split in noted}
    planned = plan_packing(cfg, tokenizer, caches, rules, out, candidates=written["candidates"], selections=selections,
                           held_out=held_out)
    if planned.packing.plan_hash != written["plan_hash"]:
        raise RuntimeError(f"{path}: the plan step's plan differs from the driver's (a bug: please report it)")
    storage.delete(path)
    return planned


class Planned(NamedTuple):
    """``plan_packing``'s result."""

    plans: list[SourcePlan]
    selections: dict[str, list[BucketSelection]]  # training's, per source
    packing: Packing  # training's
    held_out: HeldOut  # {split: {source: selections}}, empty without held-out splits
    splits: dict[str, Packing]  # each held-out split's


def plan_packing(cfg: MixtureConfig, tokenizer: TokenizerInfo, caches: dict[str, TokenCache],
                 rules: dict[str, SampleRule | None], out: str, config_sha: str | None = None,
                 candidates: dict | None = None, selections: dict | None = None,
                 held_out: HeldOut | None = None) -> Planned:
    """The plans, selections and the pack stage's ``Packing`` of training and of each held-out split.

    Pure arithmetic, deterministic: the driver and a pipeline's plan step get the same answer.
    Held-out splits draw their documents first (held_out.py); training plans and selects among
    what they left. ``config_sha``: ``config_hash(cfg)`` when computed elsewhere; ``candidates``
    (before held-out splits take theirs), ``selections`` and ``held_out``: when known already (each
    otherwise takes passes over every document table).
    """
    bounds = cfg.bucket_bounds
    candidates = candidates if candidates is not None else _candidates(caches, bounds, rules)
    if held_out is None and cfg.held_out_tokens:
        held_out = select_held_out(cfg, caches, rules, candidates, _available(rules, candidates))
    held_out = held_out or {}
    train_rules, train_candidates = rules, candidates
    if held_out:  # training's candidates: what no split took
        train_rules = {n: split_rule(cfg.seed, n, held_out, TRAIN, rules[n]) for n in caches}
        train_candidates = {n: remaining(c, held_out, n) for n, c in candidates.items()}
    plans = _plan(cfg, rules, train_candidates)
    if selections is None:
        selections = {
            p.source: select_source(
                caches[p.source], p.source, bounds, [b.target_tokens for b in p.buckets],
                train_candidates[p.source][0], cfg.seed, train_rules[p.source],
            )
            for p in plans
        }
    names = [p.source for p in plans]
    packing = Packing(
        cfg.name, tuple(names), tuple(caches[n].directory for n in names), tuple(len(caches[n].parts) for n in names),
        tuple(bounds), tuple(tuple(selections[n]) for n in names), tuple(train_rules[n] for n in names), cfg.seed,
        cfg.num_shards, cfg.seq_len, tokenizer.dtype.name, out,
        _plan_hash(config_sha or config_hash(cfg), tokenizer, caches, selections, rules, held_out), cfg.layout)
    splits = {split: split_packing(cfg, packing, held_out, split) for split in held_out}
    return Planned(plans, selections, packing, held_out, splits)


def _candidates(caches: dict[str, TokenCache], bounds, rules) -> dict[str, tuple[list[int], list[int]]]:
    return {name: candidates_by_bucket(c, bounds, rules[name]) for name, c in caches.items()}


def _finish(cfg, tokenizer, out, cache_root, caches, rules, planned: Planned) -> dict:
    """After packing: check every shard, write the held-out splits' manifests, then the mixture's
    (last: its presence means complete) and the report."""
    plans, selections, packing = planned.plans, planned.selections, planned.packing
    remove_temporaries(out)  # a killed pack writer's: every pipeline has ended
    names = list(packing.sources)
    tokenized = {name: {"sample_rule": rules[name].to_dict() if rules[name] else None,
                        "tokens": rule_tokens(c, rules[name]) if rules[name] else c.stats["tokens"]}
                 for name, c in caches.items()}
    shards = _written_shards(out, cfg.name, cfg.num_shards, packing.plan_hash)
    subsets = {n: selected_by_subset(caches[n], n, cfg.bucket_bounds, cfg.seed, selections[n], packing.rules[i])
               for i, n in enumerate(names)}
    manifest = build_manifest(cfg, tokenizer, plans, selections, {n: caches[n] for n in names}, shards,
                              packing.plan_hash, tokenized, subsets)
    if planned.splits:
        manifest["held_out"] = _finish_splits(cfg, tokenizer, out, caches, rules, planned)
    with atomic_writer(storage.join(out, TOKENIZER_FILE), "wb") as f:  # gpt-neox-data.json's vocab-file
        f.write(tokenizer.json_bytes)
    write_json(storage.join(out, NEOX_FILE), neox_config(manifest, out))
    write_megatron_args(manifest, out, cfg.tokenizer_path)
    crash_point(f"before-manifest:{cfg.name}")
    write_json(storage.join(out, "manifest.json"), manifest)  # last: its presence means complete
    write_report(out, manifest, cache_root)  # report.md + plots, from the manifest and the caches
    print(summary_table(manifest))
    return manifest


def _finish_splits(cfg, tokenizer, out, caches, rules, planned: Planned) -> dict:
    """Each held-out split's manifest (in its folder), and the mixture manifest's ``held_out`` section."""
    candidates = _candidates(caches, cfg.bucket_bounds, rules)
    manifests = {}
    for split, packing in planned.splits.items():
        folder = storage.join(out, split)
        shards = _written_shards(folder, packing.mixture, packing.num_shards, packing.plan_hash)
        selections = {n: list(planned.held_out[split][n]) for n in packing.sources}
        subsets = {n: selected_by_subset(caches[n], n, cfg.bucket_bounds, cfg.seed, packing.selections[i],
                                         packing.rules[i]) for i, n in enumerate(packing.sources)}
        plans = split_plans(cfg, planned.held_out, candidates, _available(rules, candidates), split)
        manifests[split] = split_manifest(cfg, tokenizer, split, plans, selections, caches, shards, packing.plan_hash,
                                          subsets)
        write_json(storage.join(folder, "manifest.json"), manifests[split])
    documents = {n: documents_per_split(caches[n], n, planned.packing, planned.held_out)
                 for n in planned.packing.sources}
    return held_out_section(manifests, documents)


def _prepare_splits(out: str, cfg: MixtureConfig) -> None:
    """Each held-out split's folder readied as ``_prepare_out`` does; a split no longer asked for is
    removed (an earlier run's), so the folder holds only what this manifest lists."""
    for split in SPLIT_FOLDERS:
        folder, name = storage.join(out, split), f"{cfg.name}-{split}"
        tokens = cfg.held_out_tokens.get(split)
        if tokens:
            _prepare_out(folder, name, cfg.split_shards(tokens))
        elif storage.exists(storage.join(folder, "manifest.json")) or storage.list_files(folder, f"{name}-*-of-*.*"):
            _remove_stale_shards(folder, name, 0)


def _available(rules: dict, candidates: dict) -> dict:
    """What the plan counts per source: the candidates, a sampled source's scaled up by its rates."""
    return {n: c if rules[n] is None else tuple([round(x) for x in xs] for xs in rules[n].holds(c))
            for n, c in candidates.items()}


def _prepare_out(out: str, name: str, count: int) -> None:
    """Before packing: no manifest (the folder is incomplete until the new one), no other run's shards."""
    make_dirs(out)
    _remove_stale_shards(out, name, count)
    storage.delete(storage.join(out, PLAN_FILE))  # and a crashed one-pipeline run's plan note


def _needs(cfg: MixtureConfig, plans: list, rules: dict, candidates: dict) -> dict[str, list[int]]:
    """Tokens per bucket a source's candidates must hold: training's targets and the held-out splits'."""
    held = held_out_targets(cfg, _available(rules, candidates)).values()
    return {p.source: [b.target_tokens + sum(t[p.source][b.index] for t in held) for b in p.buckets] for p in plans}


def _short(needs: dict, rules: dict, candidates: dict) -> list[str]:
    """Sampled sources whose candidates hold fewer tokens than some bucket needs."""
    return [n for n, need in needs.items() if rules[n] is not None
            and any(t > c for t, c in zip(need, candidates[n][0]))]


def _plan(cfg: MixtureConfig, rules: dict, candidates: dict) -> list:
    """The plan, counting a sampled source's buckets as their candidates scaled up by the rates."""
    return make_plan(cfg, _available(rules, candidates))


def _plan_hash(config_sha: str, tokenizer, caches, selections, rules, held_out: HeldOut | None = None) -> str:
    # The caches' documents and the rules decide the shards; a sampled run read from a whole cache
    # writes the same bytes as one read from its own sampled cache, so the rule, not the cache, counts.
    key = {
        "mixprep": __version__,
        "config": config_sha,
        "tokenizer": tokenizer.sha256,
        "sources": {n: {"source": c.manifest.get("source_fingerprint", c.manifest["fingerprint"]),
                        "sample_rule": rules[n].to_dict() if rules[n] else None} for n, c in sorted(caches.items())},
        "selections": {n: [s.to_dict() for s in sel] for n, sel in sorted(selections.items())},
    }
    if held_out:  # absent without held-out splits: such a plan hashes as before they existed
        key["held_out"] = {split: {n: [s.to_dict() for s in sel] for n, sel in sorted(per_source.items())}
                           for split, per_source in held_out.items()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _written_shards(out: str, name: str, count: int, plan_hash: str) -> list[dict]:
    """Every promised shard's record; a missing or stale one is an error, never a short manifest."""
    shards = []
    for shard in shard_names(name, count):
        sidecar = storage.join(out, "_shards", shard + ".json")
        record = read_json(sidecar) if storage.exists(sidecar) else None
        if record is None or record.get("plan_hash") != plan_hash or not all(
            storage.exists(storage.join(out, shard + ext)) for ext in (".bin", ".idx")
        ):
            raise OutputError(storage.join(out, shard + ".bin"),
                              RuntimeError("the pack stage finished without writing this shard"))
        shards.append(record)
    return shards


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
