"""Held-out validation and test mixtures: documents no training copy uses, at the mixture's shares.

    validation_tokens: 2000000   # in a mixture: out/NAME/valid/NAME-valid-NNNNN-of-MMMMM.{bin,idx}
    test_tokens: 2000000         # out/NAME/test/NAME-test-NNNNN-of-MMMMM.{bin,idx}

Each split asks every source for ``split_exact(split tokens, weights)`` tokens, spread over the
source's length buckets in their natural proportions (no long-document upweighting). Its documents
are picked as training's are (select.py: key order, an exact subset sum closing each bucket, whole
documents, within a few tokens of the target), but by keys of their own purpose
(``hashing.held_out_purpose``) and with at most one copy of any document: a split that would need a
whole bucket is refused. Validation draws first, test from what validation left; training's
candidates are what neither took (``select.SplitRule``), before the training plan, so its
``max_repetition`` is checked against what remains. A document is in one split at most.

Each split is packed by the same ``PackShards`` into its own folder (``valid/``, ``test/``) with its
own manifest.json, so the readers (``MixtureDataset``, ``mixprep verify``, ``mixprep inspect``)
take a split folder as they take a mixture folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Sequence

import numpy as np

from ..cache import TokenCache
from ..config import MixtureConfig
from ..hashing import held_out_purpose
from ..layout import (  # every split a mixture may have, in drawing order; each packed into out/SPLIT/
    SPLIT_FOLDERS,
    split_dir,
    split_mixture,
)
from ..pack import Packing
from ..sampling import SampleRule
from .plan import BucketPlan, PlanError, SourcePlan, bucket_label, split_exact
from .select import TRAIN, BucketSelection, SplitRule, copies_for, doc_arrays, doc_buckets, select_source

__all__ = ["HeldOut", "held", "split_rule", "held_out_targets", "source_split_tokens", "remaining", "select_held_out",
           "split_packing", "split_plans", "documents_per_split", "TRAIN"]

HeldOut = dict  # {split: {source: (BucketSelection per bucket)}}; splits are drawn in SPLIT_FOLDERS' order


def held(held_out: HeldOut, source: str, before: str | None = None) -> tuple:
    """(split, selections) of ``source`` for the splits drawn before split ``before`` (all: None)."""
    out = []
    for split in SPLIT_FOLDERS:  # drawing order, whatever the dict's (a plan note's JSON sorts its keys)
        if split == before:
            break
        if split in held_out:
            out.append((split, tuple(held_out[split][source])))
    return tuple(out)


def split_rule(seed: int, source: str, held_out: HeldOut, keep: str, sample: SampleRule | None) -> SplitRule:
    return SplitRule(seed, source, held(held_out, source), keep, sample)


def held_out_targets(cfg: MixtureConfig, available: dict[str, tuple[list, list]]) -> dict[str, dict[str, list[int]]]:
    """{split: {source: tokens per bucket}}: the training weights (split_exact), natural lengths.

    ``available``: per source, (tokens, documents) per bucket as the plan counts them (a sampled
    source's estimated whole), so the proportions are the source's own.
    """
    sources = [s for s in cfg.sources if s.weight > 0]
    out = {}
    for split, tokens in cfg.held_out_tokens.items():
        per_source = split_exact(tokens, [s.weight for s in sources])
        out[split] = {s.name: split_exact(t, [round(x) for x in available[s.name][0]])
                      for s, t in zip(sources, per_source)}
    return out


def source_split_tokens(cfg: MixtureConfig, source: str) -> list[int]:
    """The tokens each held-out split asks of ``source`` (split_exact over the weights, as ``held_out_targets``)."""
    sources = [s for s in cfg.sources if s.weight > 0]
    at = [s.name for s in sources].index(source)
    return [split_exact(tokens, [s.weight for s in sources])[at] for tokens in cfg.held_out_tokens.values()]


def remaining(candidates: tuple[list, list], held_out: HeldOut, source: str, before: str | None = None) -> tuple:
    """(tokens, documents) per bucket of ``candidates`` that the splits drawn before ``before`` left.

    Arithmetic, no pass over the tables: a split's documents are candidates of the same buckets,
    one copy each.
    """
    tokens, docs = list(candidates[0]), list(candidates[1])
    for _, selections in held(held_out, source, before):
        for b, s in enumerate(selections):
            tokens[b] -= s.selected_tokens
            docs[b] -= s.selected_copies
    return tokens, docs


def select_held_out(cfg: MixtureConfig, caches: dict[str, TokenCache], rules: dict, candidates: dict,
                    available: dict) -> HeldOut:
    """Every split's selections, per source: validation first, then test from what it left."""
    targets = held_out_targets(cfg, available)
    out: HeldOut = {}
    for split in cfg.held_out_tokens:
        out[split] = {}
        for name, cache in caches.items():
            rule = SplitRule(cfg.seed, name, held(out, name, split), TRAIN, rules[name])  # what earlier splits left
            left = remaining(candidates[name], out, name, split)[0]
            selections = select_source(cache, name, cfg.bucket_bounds, targets[split][name], left, cfg.seed, rule,
                                       purpose=held_out_purpose(split))
            _check_one_copy(cfg, split, name, selections, left)
            out[split][name] = tuple(selections)
    return out


def _check_one_copy(cfg, split: str, source: str, selections: Sequence[BucketSelection], left: list) -> None:
    for b, s in enumerate(selections):
        if s.full_copies:
            raise PlanError(
                f"source {source!r}, bucket {bucket_label(b, cfg.bucket_bounds)} tokens: the {split} split asks for "
                f"{s.target_tokens:,} tokens but the bucket has {left[b]:,} left: a held-out split takes at most one "
                "copy of a document and must leave some to train on. Lower validation_tokens / test_tokens.")


def split_plans(cfg: MixtureConfig, held_out: HeldOut, candidates: dict, available: dict,
                split: str) -> list[SourcePlan]:
    """A split's plan, as the manifest describes one: per bucket, what was left to draw from and the target
    (``available``: as ``held_out_targets`` takes it)."""
    bounds = cfg.bucket_bounds
    targets = held_out_targets(cfg, available)[split]
    plans = []
    for s in cfg.sources:
        if s.weight <= 0:
            continue
        tokens, docs = remaining(candidates[s.name], held_out, s.name, split)
        buckets = tuple(BucketPlan(b, bucket_label(b, bounds), tokens[b], docs[b], t)
                        for b, t in enumerate(targets[s.name]))
        plans.append(SourcePlan(s.name, s.category, s.weight, sum(targets[s.name]), buckets))
    return plans


def split_packing(cfg: MixtureConfig, training: Packing, held_out: HeldOut, split: str) -> Packing:
    """The pack stage's work for one split: the split's documents (a ``SplitRule`` keeps only them),
    one copy each, into ``out/SPLIT/NAME-SPLIT-NNNNN-of-MMMMM``."""
    rules = tuple(split_rule(cfg.seed, n, held_out, split, r.sample if isinstance(r, SplitRule) else r)
                  for n, r in zip(training.sources, training.rules))
    selections = tuple(tuple(BucketSelection(1, 0, (), s.target_tokens, s.selected_tokens, s.selected_copies)
                             for s in held_out[split][n]) for n in training.sources)
    key = json.dumps({"training": training.plan_hash, "split": split}, sort_keys=True).encode()
    return dataclasses.replace(
        training, mixture=split_mixture(cfg.name, split), selections=selections, rules=rules,
        num_shards=cfg.split_shards(cfg.held_out_tokens[split]), out_dir=split_dir(training.out_dir, split),
        plan_hash=hashlib.sha256(key).hexdigest())


def documents_per_split(cache: TokenCache, source: str, training: Packing, held_out: HeldOut) -> dict:
    """Distinct documents of ``source`` per split, counted in one pass: candidates, training's (one
    copy or more), each held-out split's, those in two splits (0), and each split's ``ids_sha256``
    (sha256 of its sorted 64-bit document hashes, little-endian: the ids' blake2b, hashing.doc_hash)."""
    src = training.sources.index(source)
    rule = training.rules[src]
    splits = held(held_out, source)
    names = [split for split, _ in splits]
    counts = dict.fromkeys(["candidates", TRAIN, *names, "in_two_splits"], 0)
    hashes: dict[str, list] = {split: [] for split in names}
    for part in range(len(cache.parts)):
        n, bucket, h, keys = doc_arrays(cache, part, training.bounds, training.seed, source, rule)
        trains = copies_for(bucket, keys, training.selections[src]) > 0
        _, candidate_bucket, _ = doc_buckets(cache, part, training.bounds, rule.sample)
        split = SplitRule(training.seed, source, splits, TRAIN).split_of(h, candidate_bucket)
        counts["candidates"] += int((candidate_bucket <= len(training.bounds)).sum())
        counts[TRAIN] += int(trains.sum())
        for i, name in enumerate(names):
            counts[name] += int((split == i).sum())
            hashes[name].append(h[split == i])
        counts["in_two_splits"] += int((trains & (split < len(names))).sum())
    ids = {name: hashlib.sha256(np.sort(np.concatenate(hs)).astype("<u8").tobytes()).hexdigest()
           for name, hs in hashes.items()}
    return {**counts, "ids_sha256": ids}
