"""Select documents exactly: which documents, how many copies, to hit each bucket's token target.

For a bucket with target T over A available tokens, every document gets ``floor(T / A)`` copies, and
the remaining ``R = T - floor(T/A) * A`` tokens come from one extra copy of the documents whose
selection key (``hashing.decision_keys(..., SELECT, 0)``) is smallest: the cut is the key at which
the running token count comes closest to R. That makes each bucket exact to within one document
(half of one, on average), and each bucket's rounding is carried into the next, longest first, so
the source as a whole is exact to within one of its shortest bucket's documents. Keys are uniform,
so the extra copies are a uniform sample of the bucket.

Finding the cut streams the document tables twice with bounded memory: a histogram of tokens over
the keys' top 16 bits finds the bin where the cut falls; only that bin's documents (and the next
few hundred, which may fill the last gap first-fit) are then sorted.
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
_FILL_CANDIDATES = 256  # documents past the cut that may fill the last gap


@dataclasses.dataclass(frozen=True)
class BucketSelection:
    full_copies: int  # copies of every document in the bucket
    cut: int  # documents whose selection key is below this get one more copy
    fill: tuple[int, ...]  # and so do these (selection keys just past the cut that fill the gap)
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
    extra = keys < cut[bucket]
    for b, s in enumerate(selections):
        if s.fill:
            extra |= (bucket == b) & np.isin(keys, np.array(s.fill, dtype=np.uint64))
    return full[bucket] + extra.astype(np.int64)


def _parts(cache: TokenCache, bounds, seed, source) -> Iterator[tuple]:
    for part in range(len(cache.parts)):
        yield doc_arrays(cache, part, bounds, seed, source)


def select_source(
    cache: TokenCache, source: str, bounds: Sequence[int], targets: Sequence[int], available: Sequence[int], seed: int
) -> list[BucketSelection]:
    """Cuts for every bucket of one source so that its selected tokens hit ``targets``."""
    nb = len(targets)
    hist = np.zeros((nb, _BINS), dtype=np.int64)  # tokens per (bucket, key bin)
    hist_docs = np.zeros((nb, _BINS), dtype=np.int64)
    for n, bucket, _, keys in _parts(cache, bounds, seed, source):
        bins = (keys >> _SHIFT).astype(np.int64)
        np.add.at(hist, (bucket, bins), n)
        np.add.at(hist_docs, (bucket, bins), 1)
    docs = hist_docs.sum(axis=1)

    # Long buckets first: their documents are coarse, so the short bucket (many small documents)
    # absorbs the carried rounding and the source total lands within one short document.
    carry = 0
    out: list[BucketSelection] = [None] * nb  # type: ignore[list-item]
    for b in reversed(range(nb)):
        target = max(0, targets[b] - carry) if available[b] else 0
        full = target // available[b] if available[b] else 0
        remainder = target - full * available[b]
        cut, fill, extra_tokens, extra_docs = _cut(cache, bounds, seed, source, b, hist[b], hist_docs[b], remainder)
        selected = full * available[b] + extra_tokens
        out[b] = BucketSelection(full, cut, fill, target, selected, full * int(docs[b]) + extra_docs)
        carry = selected - target
    return out


def _cut(cache, bounds, seed, source, b, hist_b, hist_docs_b, remainder) -> tuple[int, tuple[int, ...], int, int]:
    """(cut key, fill keys, tokens, documents) of the extra copies that make ``remainder`` tokens.

    Documents are taken in key order while they fit; the gap left before the first one that does
    not fit is filled first-fit, in key order, by the next ``_FILL_CANDIDATES`` documents.
    """
    if remainder <= 0:
        return 0, (), 0, 0
    cum = np.cumsum(hist_b)
    j = int(np.searchsorted(cum, remainder, side="left"))  # the bin where the running sum reaches R
    base = int(cum[j - 1]) if j else 0
    # Candidates: bins j..j_end, enough of them to hold the fill candidates (few bins at scale).
    after = np.cumsum(hist_docs_b[j:])
    j_end = j + min(int(np.searchsorted(after, _FILL_CANDIDATES, side="left")), len(after) - 1)
    keys, counts = [], []
    docs_before = 0
    for n, bucket, _, k in _parts(cache, bounds, seed, source):
        in_bucket = bucket == b
        bins = (k >> _SHIFT).astype(np.int64)
        docs_before += int(np.count_nonzero(in_bucket & (bins < j)))
        sel = in_bucket & (bins >= j) & (bins <= j_end)
        keys.append(k[sel])
        counts.append(n[sel])
    keys_j, n_j = np.concatenate(keys), np.concatenate(counts)
    order = np.argsort(keys_j, kind="stable")
    keys_j, n_j = keys_j[order], n_j[order]
    running = base + np.cumsum(n_j)
    take = int(np.searchsorted(running, remainder, side="right"))  # documents that fit entirely
    tokens = int(running[take - 1]) if take else base
    fill = []
    gap = remainder - tokens
    for i in range(take + 1, len(n_j)):
        if gap == 0:
            break
        if n_j[i] <= gap:
            fill.append(int(keys_j[i]))
            gap -= int(n_j[i])
    if take < len(n_j) and int(running[take]) - remainder < gap:
        # Taking the first document that does not fit overshoots by less than the filled gap.
        take, fill, gap = take + 1, [], remainder - int(running[take])
    # Documents with key < cut get the extra copy: the first key not taken, or the end of the bins.
    cut = int(keys_j[take]) if take < len(keys_j) else min((j_end + 1) << (64 - _BIN_BITS), 2**64 - 1)
    return cut, tuple(sorted(fill)), remainder - gap, docs_before + take + len(fill)
