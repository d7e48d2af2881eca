"""Near duplicates across a mixture's sources, found in Beam before the plan (issue 26; docs/DEDUP.md).

    pairs = near_pairs(run, caches, rules)   # [((source, part, row), (source, part, row)), ...]

One Beam job over every cache part of the mixed sources: each candidate document's MinHash signature
is computed from its cached token ids (``dedup/minhash.py``: n-grams of ids, EOS dropped; no text is
read again), its LSH band keys group it with the documents sharing a band (``CandidatePairs``: a star
from each bucket's first document in keep order), and each candidate pair is kept when the two
signatures agree on at least the threshold's share of values (``VerifyPairs``). The verified pairs
come back to the driver sorted, and ``mix/dedup.py`` resolves them with the exact pairs into clusters
(connected components), one document kept per cluster by the keep order. Documents without n-grams
(empty, EOS only) take no part: exact dedup handles them.
"""

from __future__ import annotations

from typing import Mapping

import apache_beam as beam
import numpy as np

from .. import storage
from ..cache import TokenCache
from ..dedup.clusters import DocRef, keep_key, ref_of
from ..dedup.minhash import EMPTY, MinHashParams, band_matrix, signatures
from ..dedup.transforms import CandidatePairs, VerifyPairs
from ..layout import near_pairs_path
from ..storage import read_json, write_json
from .select import doc_buckets

__all__ = ["near_pairs"]


class _SignPartFn(beam.DoFn):
    """(source index, part) -> (keep key, band keys) per candidate document; signatures tagged "sigs"."""

    def __init__(self, names, directories, rules, bounds, priority, params: MinHashParams):
        self._names, self._dirs, self._rules = names, directories, rules
        self._bounds, self._priority, self._params = tuple(bounds), tuple(priority), params

    def process(self, element):
        s, part = element
        name, cache = self._names[s], TokenCache(self._dirs[s])
        try:
            _, bucket, h = doc_buckets(cache, part, self._bounds, self._rules[s])
            rows = np.flatnonzero(bucket <= len(self._bounds)).tolist()  # the candidates, as exact dedup's
            tokens = cache.tokens(part)
            sigs = signatures([np.asarray(tokens[r]) for r in rows], self._params)
        finally:
            cache.close()
        bands = band_matrix(sigs, self._params)
        empty = (sigs == EMPTY).all(axis=1)
        for i, r in enumerate(rows):
            if empty[i]:
                continue
            key = keep_key(DocRef(name, part, r, int(h[r])), self._priority)
            yield beam.pvalue.TaggedOutput("sigs", (key, sigs[i].tobytes()))
            yield key, [(j, bands[i, j].tobytes()) for j in range(self._params.bands)]


def _place(key: tuple) -> list:
    ref = ref_of(key)
    return [ref.source, ref.part, ref.row]


def _write_pairs(pairs: list, path: str) -> None:
    write_json(path, sorted([_place(a), _place(b)] for a, b in pairs))


def near_pairs(run, caches: Mapping[str, TokenCache], rules: Mapping) -> list[tuple[tuple, tuple]]:
    """The verified near-duplicate pairs among the candidates of every mixed source, as
    ((source, part, row), (source, part, row)), sorted; one Beam job on the run's runner."""
    cfg, params = run.cfg, run.cfg.near_params
    names = tuple(s.name for s in cfg.sources if s.name in caches)
    work = [(s, p) for s, n in enumerate(names) for p in range(len(caches[n].parts))]
    path = near_pairs_path(run.out)
    storage.delete(path)
    sign = _SignPartFn(names, [caches[n].directory for n in names], [rules.get(n) for n in names],
                       cfg.bucket_bounds, cfg.dedup.priority, params)
    with run.pipeline() as p:
        docs = (p
                | "ListParts" >> beam.Create(work, reshuffle=False)
                | "SpreadParts" >> beam.Reshuffle()
                | "Sign" >> beam.ParDo(sign).with_outputs("sigs", main="bands"))
        _ = (docs.bands
             | "CandidatePairs" >> CandidatePairs()
             | "VerifyPairs" >> VerifyPairs(docs.sigs, params.threshold)
             | "Gather" >> beam.combiners.ToList()
             | "WritePairs" >> beam.Map(_write_pairs, path))
    pairs = [(tuple(a), tuple(b)) for a, b in read_json(path)]
    storage.delete(path)
    return pairs
