"""The sample rule: which documents of a source are tokenized, and which are a bucket's candidates.

Every document has a sample unit ``u`` in [0, 1) (``sample_units``: a stable hash of its id), and
bucket b's candidates are the documents with ``u < q_b``. ``choose_rule`` sets the first pass's
rates from an estimate; the package's docstring (``pipeline/sampling/__init__.py``) tells the whole story.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from ..hashing import mix

__all__ = ["MIN_HOLDS", "FIRST_PASS", "TOP_UPS", "SampleRule", "sample_units", "choose_rule"]

MIN_HOLDS = 4.0  # sample a source that holds at least this many times what the mixture needs of it,
MIN_GROUP_DOCS = 200  # when each group of buckets gives at least this many documents (else its estimate is noisy)
FIRST_PASS = 0.8  # the first pass tokenizes this share of the estimated need (docstring)
TOP_UPS = 3  # top-ups before a source still short is tokenized whole
_SALT = np.uint64(int.from_bytes(hashlib.blake2b(b"mixprep-sample-unit", digest_size=8).digest(), "little"))
_UNIT = 2.0**-53


def sample_units(doc_hashes: np.ndarray) -> np.ndarray:
    """Each document's sample unit, uniform in [0, 1): the top 53 bits of a mixed ``doc_hash``.

    Exact in float64, so ``u < rate`` is decided identically everywhere.
    """
    return (mix(np.asarray(doc_hashes, dtype=np.uint64) ^ _SALT) >> np.uint64(11)).astype(np.float64) * _UNIT


@dataclasses.dataclass(frozen=True)
class SampleRule:
    """Which documents of a source are tokenized, and which of those are a bucket's candidates."""

    bounds: tuple[int, ...]  # the mixture's length-bucket bounds, in tokens
    rates: tuple[float, ...]  # per bucket: documents with u < rate are its candidates
    chars_per_token: tuple[float, float]  # (low, high): c characters make c/high .. c/low + 1 tokens
    # The same per log2 bin of characters, where the estimate saw enough documents of that length:
    # ((bin, low, high), ...); other lengths use chars_per_token.
    by_length: tuple[tuple[int, float, float], ...] = ()

    def to_dict(self) -> dict:
        return {"bounds": list(self.bounds), "rates": list(self.rates), "chars_per_token": list(self.chars_per_token),
                "by_length": [list(x) for x in self.by_length]}

    @classmethod
    def from_dict(cls, d: dict) -> "SampleRule":
        return cls(tuple(d["bounds"]), tuple(float(r) for r in d["rates"]), tuple(d["chars_per_token"]),
                   tuple((int(k), float(lo), float(hi)) for k, lo, hi in d.get("by_length", ())))

    def rate_for_chars(self, n_chars: np.ndarray) -> np.ndarray:
        """The rate a document gets before it is tokenized: the largest over its possible buckets."""
        n_chars = np.asarray(n_chars, dtype=np.float64)
        lo = np.full(len(n_chars), self.chars_per_token[0])
        hi = np.full(len(n_chars), self.chars_per_token[1])
        if self.by_length:
            length_bin = np.floor(np.log2(np.maximum(n_chars, 1))).astype(np.int64)
            for k, lo_k, hi_k in self.by_length:
                at = length_bin == k
                lo[at], hi[at] = lo_k, hi_k
        bounds = np.asarray(self.bounds, dtype=np.float64)
        first = np.searchsorted(bounds, n_chars / hi, side="right")
        last = np.searchsorted(bounds, n_chars / lo + 1, side="right")
        out = np.zeros(len(n_chars))
        for b, rate in enumerate(self.rates):
            out = np.where((first <= b) & (b <= last), np.maximum(out, rate), out)
        return out

    def covers(self, other: "SampleRule") -> bool:
        """Whether every document ``other`` tokenizes, this rule tokenizes too."""
        same_buckets = ((self.bounds, self.chars_per_token, self.by_length)
                        == (other.bounds, other.chars_per_token, other.by_length))
        return same_buckets and all(a >= b for a, b in zip(self.rates, other.rates))

    def holds(self, candidates: tuple[Sequence[int], Sequence[int]]) -> tuple[list[float], list[float]]:
        """What each bucket holds (tokens, documents), estimated from its candidates: a uniform
        sample of it at the bucket's rate."""
        tokens, docs = candidates
        return ([t / r if r else 0.0 for t, r in zip(tokens, self.rates)],
                [d / r if r else 0.0 for d, r in zip(docs, self.rates)])

    def tokenize_mask(self, units: np.ndarray, n_chars: np.ndarray) -> np.ndarray:
        """Documents to tokenize."""
        return units < self.rate_for_chars(n_chars)

    def candidate_mask(self, units: np.ndarray, n_chars: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Tokenized documents that are candidates of their (now known) bucket."""
        rates = np.asarray(self.rates, dtype=np.float64)
        return self.tokenize_mask(units, n_chars) & (units < rates[bucket])


def choose_rule(
    targets: Sequence[int], est_tokens: Sequence[int], est_docs: Sequence[int],
    chars_per_token: tuple[float, float], bounds: Sequence[int], by_length: Sequence = (),
    groups: Sequence[int] | None = None, share: float = FIRST_PASS,
) -> SampleRule | None:
    """The first pass's rule for a source whose buckets are estimated to hold ``est_tokens`` /
    ``est_docs`` and are asked for ``targets`` tokens: rates that aim at ``share`` of each target;
    None when the source does not hold ``MIN_HOLDS`` times its target, or the mixture takes fewer
    than ``MIN_GROUP_DOCS`` documents of a group (tokenize it whole).

    ``groups``: the buckets whose targets are planned together (short / long under a long-document
    policy; all one group without). After tokenizing, targets are planned from the candidates
    themselves (a bucket counts as candidates / rate), which for a group of few documents is a noisy
    figure to plan the long-document share from.
    """
    need, holds = sum(targets), sum(est_tokens)
    if need <= 0 or holds < MIN_HOLDS * need:
        return None
    natural = need / holds
    groups = list(groups) if groups is not None else [0] * len(targets)
    taken_docs = {}  # documents each group's targets take, as estimated
    for g, t, a, d in zip(groups, targets, est_tokens, est_docs):
        taken_docs[g] = taken_docs.get(g, 0.0) + (t / a * d if a > 0 else 0.0)
    wanted = {g for g, t in zip(groups, targets) if t > 0}  # groups whose targets take something
    if min(k for g, k in taken_docs.items() if g in wanted) < MIN_GROUP_DOCS:
        return None
    rates = []
    for t, a in zip(targets, est_tokens):
        if a <= 0:  # the estimate saw no such document: sample at the source's natural rate
            rates.append(min(1.0, natural * share))
        else:
            rates.append(min(1.0, share * t / a) if t > 0 else 0.0)
    return SampleRule(tuple(bounds), tuple(rates), tuple(chars_per_token), tuple(tuple(x) for x in by_length))
