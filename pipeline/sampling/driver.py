"""The driver's loop: tokenize the samples, check them against the plan, top up those that fall short.

    tokenized = tokenize_samples(run, rules, found, missing)

A sample short of some bucket's target (a first one aims low: the package's docstring) is topped
up, with rates predicted from what the first pass read (``topup``), and the plan is made again; a
source that cannot be topped up, or is still short after ``TOP_UPS``, is tokenized whole. With no
sampled source this is one tokenize pipeline and nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple, Sequence

from ..cache import TokenCache
from ..cache.tokenizing import Missing, find_caches, tokenize_missing
from ..mix.dedup import deduplicated
from ..mix.held_out import source_split_tokens
from ..mix.plan import bucket_targets, split_exact
from ..mix.planning import Candidates, Rules, candidates_of, needs, plan_sources
from ..mix.select import candidates_by_bucket
from ..run import Run
from .estimate import length_groups
from .rule import MIN_HOLDS, TOP_UPS, SampleRule
from .topup import SampleView, predict_top_up

__all__ = ["Tokenized", "tokenize_samples"]

log = logging.getLogger("mixprep")


class Tokenized(NamedTuple):
    """Every mixed source's cache, the rule it is read through (None: whole) and its candidates."""

    caches: dict[str, TokenCache]
    rules: Rules
    candidates: Candidates


def tokenize_samples(run: Run, rules: Rules, found: dict[str, TokenCache], missing: Sequence[Missing]) -> Tokenized:
    """Build ``missing``, then top up the samples short of the plan until none is (or tokenize them whole)."""
    cfg, bounds, rules = run.cfg, run.cfg.bucket_bounds, dict(rules)
    caches = {**found, **tokenize_missing(run, missing)}
    # With exact dedup the samples are checked against what dedup leaves of them (duplicates across
    # sources are resolved over what was tokenized), counted again after every top-up.
    dedup = cfg.exact_dedup and any(rules.values())
    candidates = candidates_of(deduplicated(cfg, caches, rules, run.out)[0] if dedup else caches, bounds, rules)

    def tokenize_again(new_rules: dict[str, SampleRule | None]) -> list:
        # A top-up copies the sample it grows (its cache may be a larger one found on disk: then only if covered).
        earlier = {n: caches[n].directory for n, r in new_rules.items()
                   if r is not None and caches[n].rule is not None and r.covers(caches[n].rule)}
        rules.update(new_rules)
        again, still = find_caches(run, rules, only=list(new_rules))
        caches.update({**again, **tokenize_missing(run, still, earlier)})
        if dedup:  # a top-up's new documents may duplicate, or be duplicated by, another source's
            candidates.update(candidates_of(deduplicated(cfg, caches, rules, run.out)[0], bounds, rules))
        else:
            candidates.update({n: candidates_by_bucket(caches[n], bounds, rules[n]) for n in new_rules})
        return plan_sources(cfg, rules, candidates)

    plans = plan_sources(cfg, rules, candidates) if any(rules.values()) else []
    groups = length_groups(cfg)
    for _ in range(TOP_UPS if plans else 0):
        need = needs(cfg, plans, rules, candidates)
        short = _short(need, rules, candidates)
        raised = {p.source: _top_up(cfg, p, rules[p.source], caches[p.source], candidates[p.source], groups,
                                    need[p.source]) for p in plans if p.source in short}
        if not (raised := {n: r for n, r in raised.items() if r is not None and r != rules[n]}):
            break  # nothing to top up: a source still short is tokenized whole
        log.info("sources %s: the sample is short of a bucket's target (a first one aims low); topping it up",
                 ", ".join(raised))
        plans = tokenize_again(raised)
    if plans and (short := _short(needs(cfg, plans, rules, candidates), rules, candidates)):
        log.warning("sources %s: their samples cannot be topped up or fall short; tokenizing them whole",
                    ", ".join(short))
        tokenize_again({n: None for n in short})
    return Tokenized(caches, rules, candidates)


def _short(need: dict, rules: Rules, candidates: Candidates) -> list[str]:
    """Sampled sources whose candidates hold fewer tokens than some bucket needs."""
    return [n for n, tokens in need.items() if rules[n] is not None
            and any(t > c for t, c in zip(tokens, candidates[n][0]))]


def _top_up(cfg, p, rule: SampleRule, cache: TokenCache, candidates, groups, need) -> SampleRule | None:
    """``rule`` raised so that its candidates meet the plan (``topup``), or None: tokenize whole."""
    bounds = cfg.bucket_bounds
    short = [b.index for b in p.buckets if need[b.index] > candidates[0][b.index]]
    held = source_split_tokens(cfg, p.source)

    def needs_of(available) -> list[int]:  # as ``planning.needs`` counts them: training's targets and the splits'
        out = bucket_targets(p.target_tokens, available, bounds, cfg.long_policy(p.source))
        for tokens in held:
            out = [a + b for a, b in zip(out, split_exact(tokens, [round(x) for x in available]))]
        return out

    rates = predict_top_up(rule.rates, groups, short, SampleView.of(cache, bounds, rule), bounds, needs_of, MIN_HOLDS)
    return None if rates is None else dataclasses.replace(rule, rates=rates)
