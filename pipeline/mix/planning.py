"""The plan of a run, made in one place: what each source gives each bucket, which documents, which shards.

    planned = plan_mixture(cfg, tokenizer, caches, rules, out)

Pure arithmetic on the caches' document tables, deterministic, so the driver and a pipeline's plan
step (``one_pipeline``) get the same answer. Duplicates go first (``mix/dedup.py``): the caches are
then seen without them, by every step below. Held-out splits draw their documents first
(held_out.py); training plans (plan.py) and selects (select.py) among what they left. The decision
(candidates, held-out and training selections) is all a ``Planned`` needs besides the config and
caches: ``Planned.note`` writes it, ``plan_from_note`` builds the same plan from it without passes
over the document tables, checked by the plan's hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from .. import __version__
from ..cache import TokenCache
from ..config import MixtureConfig, config_hash
from ..layout import SPLIT_FOLDERS
from ..pack import Packing
from ..sampling import SampleRule
from ..tokenizer import TokenizerInfo
from .dedup import Dedup, deduplicated
from .held_out import TRAIN, HeldOut, held_out_targets, remaining, select_held_out, split_packing, split_rule
from .plan import SourcePlan, make_plan
from .select import BucketSelection, candidates_by_bucket, select_source

__all__ = ["Candidates", "Planned", "available", "candidates_of", "needs", "plan_from_note", "plan_mixture",
           "plan_sources"]

Candidates = dict[str, tuple[list[int], list[int]]]  # per source: (tokens, documents) per bucket
Rules = dict[str, SampleRule | None]


class Planned(NamedTuple):
    """A run's plan: its inputs (caches, rules, candidates) and what it decided."""

    caches: dict[str, TokenCache]
    rules: Rules
    candidates: Candidates  # before held-out splits take theirs
    plans: list[SourcePlan]  # training's
    selections: dict[str, list[BucketSelection]]  # training's, per source
    packing: Packing  # training's
    held_out: HeldOut  # {split: {source: selections}}, empty without held-out splits
    splits: dict[str, Packing]  # each held-out split's
    dedup: Dedup | None = None  # the duplicates removed before planning (mix/dedup.py), None: off

    def note(self) -> dict:
        """The decision, as JSON: with the config and caches, ``plan_from_note`` makes this plan again."""
        note = {"plan_hash": self.packing.plan_hash, "tokens": self.packing.selected_tokens,
                "candidates": self.candidates,
                "selections": {n: [s.to_dict() for s in sel] for n, sel in self.selections.items()}}
        if self.held_out:
            note["held_out"] = {split: {n: [s.to_dict() for s in sel] for n, sel in per_source.items()}
                                for split, per_source in self.held_out.items()}
        return note


def plan_mixture(cfg: MixtureConfig, tokenizer: TokenizerInfo, caches: dict[str, TokenCache], rules: Rules, out: str,
                 candidates: Candidates | None = None, config_sha: str | None = None,
                 near: list | None = None) -> Planned:
    """Decide the plan: duplicates out, then held-out splits' documents, then training's plan and selections.

    ``candidates``: when known already (else a pass over every document table); ``config_sha``:
    ``config_hash(cfg)`` when computed elsewhere (a worker has no local path to the tokenizer);
    ``near``: the near-duplicate pairs (``mix/near.py``) when the config asks for near dedup.
    """
    # Duplicates out first: from here on, every count, plan, selection and pack sees only what remains.
    caches, dedup = deduplicated(cfg, caches, rules, out, near)
    if dedup is not None or candidates is None:
        candidates = candidates_of(caches, cfg.bucket_bounds, rules)
    held_out = select_held_out(cfg, caches, rules, candidates, available(rules, candidates)) \
        if cfg.held_out_tokens else {}
    train_rules, train_candidates = _training(cfg, caches, rules, candidates, held_out)
    plans = plan_sources(cfg, rules, train_candidates)
    selections = {p.source: select_source(caches[p.source], p.source, cfg.bucket_bounds,
                                          [b.target_tokens for b in p.buckets], train_candidates[p.source][0],
                                          cfg.seed, train_rules[p.source])
                  for p in plans}
    return _assemble(cfg, tokenizer, caches, rules, out, candidates, held_out, selections, config_sha, dedup)


def plan_from_note(cfg: MixtureConfig, tokenizer: TokenizerInfo, caches: dict[str, TokenCache], rules: Rules,
                   out: str, note: dict, where: str = "the plan note") -> Planned:
    """The plan ``note`` (``Planned.note``) records, checked by its hash."""
    selections = {n: [BucketSelection.from_dict(d) for d in sel] for n, sel in note["selections"].items()}
    noted = note.get("held_out", {})
    held_out = {split: {n: tuple(BucketSelection.from_dict(d) for d in sel) for n, sel in noted[split].items()}
                for split in SPLIT_FOLDERS if split in noted}
    candidates = {n: (list(t), list(d)) for n, (t, d) in note["candidates"].items()}
    # The removals are the plan step's resolution, read from its folder (found by the hash of its
    # inputs; resolved again if it is missing): the plan hash covers them, so the check below also says
    # the plan step removed the same documents. (Near dedup needs its own Beam job before the plan:
    # such runs plan on the driver, never from a note.)
    if cfg.near_dedup:
        raise RuntimeError(f"{where}: a plan with near dedup is made on the driver, not from a note (a bug)")
    caches, dedup = deduplicated(cfg, caches, rules, out)
    planned = _assemble(cfg, tokenizer, caches, rules, out, candidates, held_out, selections, dedup=dedup)
    if planned.packing.plan_hash != note["plan_hash"]:
        raise RuntimeError(f"{where}: the plan step's plan differs from the driver's (a bug: please report it)")
    return planned


def _training(cfg, caches, rules, candidates, held_out) -> tuple[Rules, Candidates]:
    """Training's rules and candidates: what no held-out split took."""
    if not held_out:
        return rules, candidates
    return ({n: split_rule(cfg.seed, n, held_out, TRAIN, rules[n]) for n in caches},
            {n: remaining(c, held_out, n) for n, c in candidates.items()})


def _assemble(cfg, tokenizer, caches, rules, out, candidates, held_out, selections, config_sha=None,
              dedup: Dedup | None = None) -> Planned:
    """The plans and ``Packing``s that a decision (candidates, held-out and training selections) makes."""
    train_rules, train_candidates = _training(cfg, caches, rules, candidates, held_out)
    plans = plan_sources(cfg, rules, train_candidates)
    names = [p.source for p in plans]
    packing = Packing(
        cfg.name, tuple(names), tuple(caches[n].directory for n in names), tuple(len(caches[n].parts) for n in names),
        tuple(cfg.bucket_bounds), tuple(tuple(selections[n]) for n in names), tuple(train_rules[n] for n in names),
        cfg.seed, cfg.num_shards, cfg.seq_len, tokenizer.dtype.name, out,
        _plan_hash(config_sha or config_hash(cfg), tokenizer, caches, selections, rules, held_out, dedup), cfg.layout,
        tuple(caches[n].removed for n in names))
    splits = {split: split_packing(cfg, packing, held_out, split) for split in held_out}
    return Planned(caches, rules, candidates, plans, selections, packing, held_out, splits, dedup)


def candidates_of(caches: dict[str, TokenCache], bounds, rules: Rules) -> Candidates:
    """Each source's candidates per bucket (all its documents, or a sample's: sampling/)."""
    return {name: candidates_by_bucket(c, bounds, rules[name]) for name, c in caches.items()}


def available(rules: Rules, candidates: Candidates) -> dict:
    """What the plan counts per source: the candidates, a sampled source's scaled up by its rates."""
    return {n: c if rules[n] is None else tuple([round(x) for x in xs] for xs in rules[n].holds(c))
            for n, c in candidates.items()}


def plan_sources(cfg: MixtureConfig, rules: Rules, candidates: Candidates) -> list[SourcePlan]:
    """The plan, counting a sampled source's buckets as their candidates scaled up by the rates."""
    return make_plan(cfg, available(rules, candidates))


def needs(cfg: MixtureConfig, plans: list[SourcePlan], rules: Rules, candidates: Candidates) -> dict[str, list[int]]:
    """Tokens per bucket a source's candidates must hold: training's targets and the held-out splits'."""
    held = held_out_targets(cfg, available(rules, candidates)).values()
    return {p.source: [b.target_tokens + sum(t[p.source][b.index] for t in held) for b in p.buckets] for p in plans}


def _plan_hash(config_sha: str, tokenizer, caches, selections, rules, held_out: HeldOut | None = None,
               dedup: Dedup | None = None) -> str:
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
    if dedup is not None:  # absent without dedup: such a plan hashes as before it existed
        key["dedup"] = dedup.digest
    if held_out:  # absent without held-out splits: such a plan hashes as before they existed
        key["held_out"] = {split: {n: [s.to_dict() for s in sel] for n, sel in sorted(per_source.items())}
                           for split, per_source in held_out.items()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
