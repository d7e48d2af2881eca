"""Select documents exactly: which documents, how many copies, to hit each bucket's token target.

For a bucket with target T over A available tokens, every document gets ``floor(T / A)`` copies, and
the remaining ``R = T - floor(T/A) * A`` tokens come from one extra copy of the documents whose
selection key (``hashing.decision_keys(..., SELECT, 0)``) is smallest: the cut is the key at which
the running token count comes closest to R. That makes each bucket exact to within one document,
and the rounding of one bucket is carried into the next, so each source is exact to within one
document too. Keys are uniform, so the extra copies are a uniform sample of the bucket.

Finding the cut streams the document tables twice with bounded memory: a histogram of tokens over
the keys' top 16 bits finds the bin where the cut falls; only that bin's documents are then sorted.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from .cache import TokenCache
from .hashing import SELECT, decision_keys

__all__ = ["BucketSelection", "select_source", "doc_arrays", "copies_for"]

_BIN_BITS = 16
_BINS = 1 << _BIN_BITS
_SHIFT = np.uint64(64 - _BIN_BITS)


@dataclasses.dataclass(frozen=True)
class BucketSelection:
    full_copies: int  # copies of every document in the bucket
    cut: int  # documents whose selection key is below this get one more copy
    target_tokens: int  # after the carry from earlier buckets
    selected_tokens: int
    selected_copies: int  # document copies, counting repeats

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def doc_arrays(cache: TokenCache, part: int, bounds: Sequence[int], seed: int, source: str):
    """(n_tokens, bucket, doc_hash, selection key) arrays of one cache part."""
    table = cache.doc_table(part, columns=["n_tokens", "doc_hash"])
    n = table.column("n_tokens").to_numpy().astype(np.int64)
    h = table.column("doc_hash").to_numpy().astype(np.uint64)
    bucket = np.searchsorted(np.asarray(bounds, dtype=np.int64), n, side="right")
    return n, bucket, h, decision_keys(h, seed, source, SELECT, 0)


def copies_for(bucket: np.ndarray, keys: np.ndarray, selections: Sequence[BucketSelection]) -> np.ndarray:
    """Number of copies of each document, from its bucket and selection key."""
    full = np.array([s.full_copies for s in selections], dtype=np.int64)
    cut = np.array([s.cut for s in selections], dtype=np.uint64)
    return full[bucket] + (keys < cut[bucket]).astype(np.int64)


def _parts(cache: TokenCache, bounds, seed, source) -> Iterator[tuple]:
    for part in range(len(cache.parts)):
        yield doc_arrays(cache, part, bounds, seed, source)


def select_source(
    cache: TokenCache, source: str, bounds: Sequence[int], targets: Sequence[int], available: Sequence[int], seed: int
) -> list[BucketSelection]:
    """Cuts for every bucket of one source so that its selected tokens hit ``targets``."""
    nb = len(targets)
    hist = np.zeros((nb, _BINS), dtype=np.int64)
    docs = np.zeros(nb, dtype=np.int64)
    for n, bucket, _, keys in _parts(cache, bounds, seed, source):
        np.add.at(hist, (bucket, (keys >> _SHIFT).astype(np.int64)), n)
        docs += np.bincount(bucket, minlength=nb)

    carry = 0
    out = []
    for b in range(nb):
        target = max(0, targets[b] - carry) if available[b] else 0
        full = target // available[b] if available[b] else 0
        remainder = target - full * available[b]
        cut, extra_tokens, extra_docs = _cut(cache, bounds, seed, source, b, hist[b], remainder)
        selected = full * available[b] + extra_tokens
        out.append(BucketSelection(full, cut, target, selected, full * int(docs[b]) + extra_docs))
        carry = selected - target
    return out


def _cut(cache, bounds, seed, source, b, hist_b, remainder) -> tuple[int, int, int]:
    """(cut key, tokens, documents) of the extra copies closest to ``remainder`` tokens."""
    if remainder <= 0:
        return 0, 0, 0
    cum = np.cumsum(hist_b)
    j = int(np.searchsorted(cum, remainder, side="left"))  # the bin where the running sum reaches R
    base = int(cum[j - 1]) if j else 0
    keys, counts = [], []
    docs_before = 0
    for n, bucket, _, k in _parts(cache, bounds, seed, source):
        in_bucket = bucket == b
        bins = (k >> _SHIFT).astype(np.int64)
        docs_before += int(np.count_nonzero(in_bucket & (bins < j)))
        sel = in_bucket & (bins == j)
        keys.append(k[sel])
        counts.append(n[sel])
    keys_j, n_j = np.concatenate(keys), np.concatenate(counts)
    order = np.argsort(keys_j, kind="stable")
    keys_j, n_j = keys_j[order], n_j[order]
    running = base + np.cumsum(n_j)
    i = int(np.searchsorted(running, remainder, side="left"))  # first doc reaching R
    take = i + 1  # docs taken from this bin
    if i > 0 and abs(int(running[i - 1]) - remainder) <= abs(int(running[i]) - remainder):
        take = i
    tokens = int(running[take - 1]) if take else base
    # Documents with key < cut get the extra copy: the first key not taken, or the end of the bin.
    cut = int(keys_j[take]) if take < len(keys_j) else min((j + 1) << (64 - _BIN_BITS), 2**64 - 1)
    return cut, tokens, docs_before + take
