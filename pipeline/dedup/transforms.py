"""Duplicate clusters in Beam: keys grouped across workers, candidate pairs, one resolution.

Documents are named by their **keep key** (``clusters.keep_key``: a plain tuple whose order is the keep
rule), so every step can pick "the best document" with ``min`` and the encoding is deterministic
(Beam's coder for tuples of ints, strings and bytes; GroupByKey needs that of its keys).

- ``CandidatePairs``: ``(doc_key, [(band, key bytes), ...])`` -> ``(a, b)``, a < b: documents are grouped
  by each (band, key); each bucket gives a star from its smallest document to every other member
  (k - 1 pairs for k members, not k(k-1)/2: a bucket of 10,000 copies of one page gives 9,999 pairs,
  and the components are the same). Exact duplicates are the same transform with one "band", the
  content key (``ExactPairs``).
- ``VerifyPairs``: keeps the pairs whose signatures agree on at least ``threshold`` of their values
  (two joins of the pairs with ``(doc_key, signature)``).
- ``ResolveClusters``: ``{"exact": pairs, "near": pairs}`` -> ``(removed, kept, kind)`` per removed
  document. It gathers all pairs in one place (``ToList``) and resolves there with the vectorized
  union-find of ``clusters``. That is acceptable because pairs are few next to documents: after the
  stars there are at most about as many pairs as duplicate documents (each duplicate joins its
  bucket's head once per band, deduplicated), and documents in no pair never reach this step. At a
  pessimistic 10% duplicates of 100M documents that is ~10M pairs, ~3 GB as Python tuples on one
  worker; a much larger run needs an iterative (large-star/small-star) join instead, not written yet.

The answer is a function of the set of pairs, which is a function of the documents: identical across
runs, runners and worker counts (tests/dedup checks 1 and 2 workers, and the numpy path of ``clusters``).
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import numpy as np

from .clusters import KINDS, components

__all__ = ["CandidatePairs", "ExactPairs", "VerifyPairs", "ResolveClusters", "resolve_pairs"]


def _stars(element):
    _, members = element
    members = sorted(set(members))  # GroupByKey gives no order; keep keys sort in keep order
    head = members[0]
    for m in members[1:]:
        yield head, m


class CandidatePairs(beam.PTransform):
    """``(doc_key, iterable of (band, key))`` -> distinct ``(a, b)`` with a < b sharing some (band, key)."""

    def expand(self, docs):
        return (docs
                | "ByBandKey" >> beam.FlatMap(lambda doc: (((band, key), doc[0]) for band, key in doc[1]))
                | "GroupByBandKey" >> beam.GroupByKey()
                | "Stars" >> beam.FlatMap(_stars)
                | "DistinctPairs" >> beam.Distinct())


class ExactPairs(beam.PTransform):
    """``(doc_key, content key bytes)`` -> distinct ``(a, b)``, a < b, of documents with equal content keys."""

    def expand(self, docs):
        return (docs
                | "OneBand" >> beam.Map(lambda doc: (doc[0], [(0, bytes(doc[1]))]))
                | "Pairs" >> CandidatePairs())


def _signature(value) -> np.ndarray:
    return np.frombuffer(value, dtype=np.uint32) if isinstance(value, (bytes, bytearray)) else np.asarray(value)


def _only(values: list, what: str, key):
    if len(values) != 1:
        raise ValueError(f"{len(values)} {what} for document {key!r}: every document in a pair needs exactly one")
    return values[0]


def _with_first_signature(element):
    a, joined = element
    partners = list(joined["pairs"])
    if partners:
        sig = _only(list(joined["signatures"]), "signatures", a)
        for b in partners:
            yield b, (a, sig)


def _check(element, threshold: float):
    b, joined = element
    firsts = list(joined["firsts"])
    if firsts:
        sig_b = _signature(_only(list(joined["signatures"]), "signatures", b))
        for a, sig_a in firsts:
            if float((_signature(sig_a) == sig_b).mean()) >= threshold:
                yield a, b


class VerifyPairs(beam.PTransform):
    """Pairs -> the pairs whose MinHash estimate of Jaccard is at least ``threshold``.

    ``signatures``: a PCollection of ``(doc_key, signature)`` (uint32 array, or its bytes) holding one
    signature for every document of a pair."""

    def __init__(self, signatures, threshold: float):
        super().__init__()
        self.signatures = signatures
        self.threshold = threshold

    def expand(self, pairs):
        firsts = ({"pairs": pairs | "ByFirst" >> beam.Map(lambda p: (p[0], p[1])), "signatures": self.signatures}
                  | "JoinFirst" >> beam.CoGroupByKey()
                  | "SignFirst" >> beam.FlatMap(_with_first_signature))
        return ({"firsts": firsts, "signatures": self.signatures}
                | "JoinSecond" >> beam.CoGroupByKey()
                | "Check" >> beam.FlatMap(_check, self.threshold))


def resolve_pairs(tagged: Iterable[tuple[str, tuple]]) -> list[tuple]:
    """``(kind, (a, b))`` pairs ("exact" or "near") -> sorted ``(removed, kept, kind)``: components of all
    pairs, each kept by its smallest key; "exact" when the removed document is joined to the kept one by
    exact pairs alone (the same content key), else "near"."""
    exact, near = [], []
    for kind, pair in tagged:
        (exact if kind == "exact" else near).append(pair)
    nodes = sorted({k for pair in exact + near for k in pair})
    if not nodes:
        return []
    index = {k: i for i, k in enumerate(nodes)}  # index order = keep order: a component's root is kept

    def as_array(pairs):
        return np.array([(index[a], index[b]) for a, b in pairs], dtype=np.int64).reshape(-1, 2)

    n = len(nodes)
    root = components(n, np.concatenate([as_array(exact), as_array(near)]))
    exact_root = components(n, as_array(exact))
    out = []
    for i in np.flatnonzero(root != np.arange(n)):
        kept = root[i]
        kind = KINDS[1] if exact_root[i] == exact_root[kept] else KINDS[2]
        out.append((nodes[i], nodes[kept], kind))
    return out


class ResolveClusters(beam.PTransform):
    """``{"exact": pairs, "near": pairs}`` (either may be absent) -> ``(removed, kept, kind)`` tuples."""

    def expand(self, pairs):
        tagged = [pcoll | f"Tag[{kind}]" >> beam.Map(lambda p, kind=kind: (kind, tuple(p)))
                  for kind, pcoll in sorted(pairs.items())]
        return (tagged
                | "AllPairs" >> beam.Flatten()
                | "Gather" >> beam.combiners.ToList()
                | "Resolve" >> beam.FlatMap(resolve_pairs))
