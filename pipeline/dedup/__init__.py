"""Exact and near-duplicate removal across sources (issue 26): the parts. A run uses them through
``mix/dedup.py`` (resolution before the plan) and ``mix/near.py`` (the near-duplicate Beam job).

- ``content``: the exact-duplicate key (normalized text -> 128-bit XXH3);
- ``minhash``: MinHash signatures of token n-grams, LSH band keys, the S-curve's math;
- ``clusters``: keep order, connected components, resolution into (removed, kept, kind) over arrays;
- ``transforms``: the same in Beam (group by band key, candidate pairs, verification, resolution);
- ``labelled``: a labelled corpus built from a seed, and precision/recall per edit rate;
- ``removed``: one source's removed documents as (part, row) arrays, what a run leaves out;
- ``measure``: ``python -m pipeline.dedup.measure`` prints the figures docs/DEDUP.md quotes.
"""

from .clusters import DocRef, Removal, components, keep_key, keep_order, resolve
from .content import DEFAULT_NORMALIZATION, NORMALIZATIONS, content_key, content_keys, normalize
from .minhash import DEFAULT_PARAMS, MinHashParams, band_keys, band_matrix, signature, signatures

__all__ = ["DocRef", "Removal", "components", "keep_key", "keep_order", "resolve", "DEFAULT_NORMALIZATION",
           "NORMALIZATIONS", "content_key", "content_keys", "normalize", "DEFAULT_PARAMS", "MinHashParams",
           "band_keys", "band_matrix", "signature", "signatures"]
