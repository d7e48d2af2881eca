"""Sizing a top-up from every document the first pass read, not only the ones it tokenized.

A sample's own estimate of a bucket (candidate tokens / rate) is poor where document sizes are
heavy-tailed: one book of a million tokens is in a sample or not, and moves the estimate of a long
bucket by tens of percent (measured on the bench corpus, docs/PERFORMANCE.md). A top-up sized from
that estimate, with an allowance for its error, tokenizes far more than the mixture takes. But the
first pass read every document: it knows each one's sample unit ``u`` and its characters before
deciding not to tokenize it. It keeps them as a histogram (``Unseen``: characters and documents per
bin of ``u`` and bin of characters), so for any rate ``q`` the top-up knows how many characters the
documents with ``u < q`` hold, in each length, and converts them to tokens per bucket with the
tokens per character that the tokenized documents of the same length show (``SampleView``). The
top-up then takes, per group of buckets planned together, the smallest rate on the grid of unit bins
whose predicted candidates meet the plan that those candidates would make (``predict_top_up``), with
a small slack for the conversion's error. What the prediction misses, the next top-up adds.

The histogram is a function of the files and the rule only (a whole cache, or a larger sample, gives
the same one through ``SampleView.of``), so the top-up, like every step, does not depend on which
cache served a source.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .rule import sample_units

__all__ = ["UNIT_BINS", "CHAR_BINS", "SLACK", "Unseen", "SampleView", "unit_bins", "char_bins", "unit_edge",
           "predict_top_up"]

UNIT_STEPS = 32  # unit bins per octave of u: rates are chosen on this grid (2.2% apart)
UNIT_BINS = UNIT_STEPS * 30  # down to u = 2**-30; smaller units share the last bin
CHAR_STEPS = 2  # character bins per octave of characters
CHAR_BINS = CHAR_STEPS * 40
SLACK = 0.02  # predicted candidates exceed each target by this much (the tokens-per-character error)
_MAX_ROUNDS = 50


def unit_bins(units: np.ndarray) -> np.ndarray:
    """Bin j holds 2**-((j+1)/32) < u <= 2**(-j/32): the documents with u < unit_edge(j) are bins >= j."""
    u = np.asarray(units, dtype=np.float64)
    with np.errstate(divide="ignore"):
        j = np.floor(-np.log2(u) * UNIT_STEPS)
    return np.minimum(np.nan_to_num(j, posinf=UNIT_BINS - 1), UNIT_BINS - 1).astype(np.int64)


def unit_edge(j: int) -> float:
    """The rate at the top of unit bin ``j`` (exact: the same float everywhere)."""
    return 2.0 ** (-j / UNIT_STEPS)


def char_bins(n_chars: np.ndarray) -> np.ndarray:
    c = np.maximum(np.asarray(n_chars, dtype=np.float64), 1.0)
    return np.minimum(np.floor(np.log2(c) * CHAR_STEPS), CHAR_BINS - 1).astype(np.int64)


class Unseen:
    """Documents read but not tokenized: documents and characters per (unit bin, character bin)."""

    def __init__(self):
        self.docs = np.zeros((UNIT_BINS, CHAR_BINS), np.int64)
        self.chars = np.zeros((UNIT_BINS, CHAR_BINS), np.int64)

    def add(self, units: np.ndarray, n_chars: np.ndarray) -> None:
        if len(units):
            at = (unit_bins(units), char_bins(n_chars))
            np.add.at(self.docs, at, 1)
            np.add.at(self.chars, at, np.asarray(n_chars, dtype=np.int64))

    def merge(self, d: dict) -> None:
        at = (np.asarray(d["unit_bins"], np.int64), np.asarray(d["char_bins"], np.int64))
        np.add.at(self.docs, at, np.asarray(d["documents"], np.int64))
        np.add.at(self.chars, at, np.asarray(d["characters"], np.int64))

    def to_dict(self) -> dict:
        """Sparse: a part holds a few thousand occupied bins at most."""
        j, k = np.nonzero(self.docs)
        return {"unit_bins": j.tolist(), "char_bins": k.tolist(), "documents": self.docs[j, k].tolist(),
                "characters": self.chars[j, k].tolist()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Unseen":
        out = cls()
        if d:
            out.merge(d)
        return out


class SampleView:
    """What a top-up knows of a source read through a rule: the tokens of the documents the rule
    tokenizes, per (unit bin, bucket), their tokens per bucket and characters per character bin, and
    the characters of the documents it does not tokenize (``Unseen``)."""

    def __init__(self, n_buckets: int):
        self.known = np.zeros((UNIT_BINS, n_buckets), np.int64)
        self.tokens_by_chars = np.zeros((CHAR_BINS, n_buckets), np.int64)
        self.chars_by_chars = np.zeros(CHAR_BINS, np.int64)
        self.unseen = Unseen()

    @classmethod
    def of(cls, cache, bounds: Sequence[int], rule) -> "SampleView":
        """From a finished cache whose documents include all that ``rule`` tokenizes (its own, a larger
        sample's or the whole source's): the same view whichever it is."""
        view = cls(len(bounds) + 1)
        view.unseen = Unseen.from_dict(cache.manifest.get("unseen"))  # None: a whole cache left nothing
        for part in range(len(cache.parts)):
            table = cache.doc_table(part, columns=["n_tokens", "doc_hash", "n_chars"])
            units = sample_units(table.column("doc_hash").to_numpy())
            chars = table.column("n_chars").to_numpy().astype(np.int64)
            view.add(units, chars, table.column("n_tokens").to_numpy(), rule.tokenize_mask(units, chars), bounds)
        return view

    def add(self, units: np.ndarray, n_chars: np.ndarray, n_tokens: np.ndarray, tokenized: np.ndarray,
            bounds: Sequence[int]) -> None:
        """Documents of the source: the ``tokenized`` ones (by the view's rule) with their tokens, the
        others only by unit and length (a cache holding more than the rule tokenizes: ``of``)."""
        units, n_chars, tokenized = np.asarray(units), np.asarray(n_chars, dtype=np.int64), np.asarray(tokenized, bool)
        self.unseen.add(units[~tokenized], n_chars[~tokenized])
        n, chars = np.asarray(n_tokens, dtype=np.int64)[tokenized], n_chars[tokenized]
        bucket = np.searchsorted(np.asarray(bounds, dtype=np.int64), n, side="right")
        k = char_bins(chars)
        np.add.at(self.known, (unit_bins(units[tokenized]), bucket), n)
        np.add.at(self.tokens_by_chars, (k, bucket), n)
        np.add.at(self.chars_by_chars, k, chars)

    def tokens_per_char(self, bounds: Sequence[int]) -> np.ndarray:
        """[character bin, bucket]: tokens per character of the tokenized documents of that length
        landing in that bucket; a length never tokenized takes the overall ratio, in the bucket its
        typical document would land in."""
        total_chars = max(int(self.chars_by_chars.sum()), 1)
        overall = self.tokens_by_chars.sum() / total_chars
        out = np.zeros(self.tokens_by_chars.shape)
        for k in range(CHAR_BINS):
            if self.chars_by_chars[k] > 0:
                out[k] = self.tokens_by_chars[k] / self.chars_by_chars[k]
            elif overall > 0:
                typical = 2.0 ** ((k + 0.5) / CHAR_STEPS) * overall
                out[k, int(np.searchsorted(np.asarray(bounds, dtype=np.float64), typical, side="right"))] = overall
        return out

    def predicted(self, bounds: Sequence[int]) -> np.ndarray:
        """[unit bin j, bucket]: the candidate tokens a rate of ``unit_edge(j)`` would give each bucket:
        the tokenized documents below it, exactly, and the untokenized ones through tokens per character."""
        below = np.cumsum(self.known[::-1], axis=0)[::-1]
        unseen_below = np.cumsum(self.unseen.chars[::-1], axis=0)[::-1]
        return below + unseen_below @ self.tokens_per_char(bounds)


def predict_top_up(rates: Sequence[float], groups: Sequence[int], short: Sequence[int], view: SampleView,
                   bounds: Sequence[int], targets_for: Callable[[list[int]], list[int]],
                   min_holds: float) -> tuple[float, ...] | None:
    """Per bucket, rates (on the unit grid, never below ``rates``) whose candidates meet the targets
    that the plan (``targets_for(available per bucket)``) makes of them; None when the source, as
    predicted, holds less than ``min_holds`` times what the targets ask (tokenize it whole).

    ``short``: the buckets whose candidates fall short now; their groups rise at least one step,
    whatever the prediction says (it may miss a few documents: a top-up must make progress)."""
    pred = view.predicted(bounds)
    need = sum(targets_for([int(x) for x in pred[0]]))
    if pred[0].sum() < min_holds * need:
        return None
    members = {g: [b for b, gg in enumerate(groups) if gg == g] for g in sorted(set(groups))}
    # Each group's floor: the grid edge at or above its current rate (a top-up covers the sample).
    floor = {g: _edge_at_or_above(max(rates[b] for b in bs)) for g, bs in members.items()}
    rising = {groups[b] for b in short}
    for g in rising:
        if unit_edge(floor[g]) <= max(rates[b] for b in members[g]):
            floor[g] -= 1  # already on the grid: one step up at least
        if floor[g] < 0:
            return None  # a rate of 1 falls short: there is nothing more to sample

    def fits(at: dict, g: int) -> bool:
        cand = [pred[at[groups[b]], b] for b in range(len(groups))]
        targets = targets_for([round(c / unit_edge(at[groups[b]])) for b, c in enumerate(cand)])
        return all(cand[b] >= targets[b] * (1 + SLACK) for b in members[g])

    # Per group, the smallest rate that fits the targets the plan would make; groups meet through the
    # plan (the long-document share), so again until none moves.
    at = dict(floor)
    for _ in range(_MAX_ROUNDS):
        moved = False
        for g in members:
            j = next((j for j in range(floor[g], -1, -1) if fits({**at, g: j}, g)), None)
            if j is None:
                return None  # not even every document would do: tokenize it whole
            moved, at[g] = moved or j != at[g], j
        if not moved:
            break
    # A group that meets its targets where it is keeps its rates (a zero stays zero).
    rising |= {g for g in members if at[g] != floor[g]}
    return tuple(max(r, unit_edge(at[groups[b]])) if groups[b] in rising else r for b, r in enumerate(rates))


def _edge_at_or_above(rate: float) -> int:
    j = max(0, min(UNIT_BINS - 1, math.floor(-math.log2(max(rate, 2.0**-30)) * UNIT_STEPS)))
    while j > 0 and unit_edge(j) < rate:
        j -= 1
    return j
