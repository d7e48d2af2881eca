"""MinHash signatures of documents' token ids, and their LSH band keys.

A document is the set of its token n-grams (``ngram`` ids in a row; the cache's trailing EOS dropped;
a document shorter than ``ngram`` is one n-gram of all its ids; an empty one has none). The Jaccard
similarity of two documents, s = |A & B| / |A | B|, is estimated from signatures of ``num_perm`` values:

1. each n-gram is hashed to 64 bits, ``h = mix(((n * G + id_0) * G + id_1) * G + ...)`` mod 2**64 (G the
   odd golden-ratio constant, n the n-gram's length, mix splitmix64's finalizer), and its top 32 bits
   are kept;
2. permutation k maps a 32-bit hash x to ``a_k * fmix32(x) + b_k mod 2**32`` (a_k odd: a bijection);
   fmix32 is MurmurHash3's finalizer. This is datasketch's ``affine32`` scheme (datasketch 2.0), and
   a_k, b_k are drawn as datasketch draws them (``numpy.random.RandomState(seed)``, whose stream numpy
   keeps fixed), so a signature equals ``datasketch.MinHash(num_perm, seed, scheme="affine32")``'s of
   the same 32-bit n-gram hashes (tests/dedup checks it);
3. the signature's k-th value is the minimum of permutation k over the document's n-grams.

For one k, P(min_A == min_B) = s, so the share of equal values estimates s with standard deviation
sqrt(s(1-s)/num_perm) (0.035 at s = 0.8, num_perm = 128).

LSH: the signature is cut into ``bands`` bands of ``rows`` values (bands * rows = num_perm). Two
documents become a candidate pair when some band is equal in both: P(candidate | s) = 1 - (1 - s^r)^b,
an S-curve whose steepest point is near t = (1/b)^(1/r). A band's key is its ``rows`` values as
big-endian bytes: equal keys are equal bands, no hash collision added.

Verification: a candidate pair is kept when its estimated Jaccard (share of equal values) is at least
``threshold``; with the S-curve's generous net below it, that puts the cut where it is stated.
``removal_probability`` is the exact chance (for ideal MinHash) that a pair of similarity s is joined.

Defaults (``MinHashParams()``): 5-token n-grams, 128 permutations, 16 bands of 8 rows (t ~ 0.71),
verified at 0.8, seed 1:

    s                                   0.5     0.7     0.8     0.9
    P(candidate), 16 x 8               0.061   0.613   0.947   0.9999
    P(joined), verified at 0.8         0.000   0.005   0.496   0.9995

docs/DEDUP.md says why these and what they find on the labelled corpus.
"""

from __future__ import annotations

import dataclasses
import functools
from math import comb
from typing import Sequence

import numpy as np

__all__ = ["MinHashParams", "DEFAULT_PARAMS", "ngram_hashes", "signature", "signatures", "band_keys",
           "band_matrix", "estimated_jaccard", "jaccard", "candidate_probability", "removal_probability",
           "lsh_threshold", "params_for", "false_rates", "optimal_bands", "EMPTY"]

EMPTY = np.uint32(0xFFFFFFFF)  # every value of an empty document's signature (it has no n-gram)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_F1 = np.uint32(0x85EBCA6B)
_F2 = np.uint32(0xC2B2AE35)
_CHUNK = 8192  # n-grams per step of the (permutations x n-grams) minimum: a 4 MB buffer at 128


@dataclasses.dataclass(frozen=True)
class MinHashParams:
    ngram: int = 5
    num_perm: int = 128
    bands: int = 16
    rows: int = 8
    seed: int = 1
    threshold: float | None = 0.8  # candidates kept when their estimated Jaccard is at least this; None: all

    def __post_init__(self):
        if self.ngram < 1 or self.num_perm < 1 or self.bands < 1 or self.rows < 1:
            raise ValueError(f"MinHash parameters must be positive: {self}")
        if self.bands * self.rows != self.num_perm:
            raise ValueError(f"bands x rows must be num_perm: {self.bands} x {self.rows} != {self.num_perm}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] or None, got {self.threshold}")

    @property
    def lsh_threshold(self) -> float:
        """The S-curve's steepest point, (1/b)^(1/r)."""
        return lsh_threshold(self.bands, self.rows)

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        return _permutations(self.num_perm, self.seed)


DEFAULT_PARAMS = MinHashParams()


@functools.lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # datasketch 2.0's affine32 draw, to the call: a odd, b any 32-bit value.
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = b.flags.writeable = False
    return a, b


def _mix64(x: np.ndarray) -> np.ndarray:
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _fmix32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x *= _F1
    x ^= x >> np.uint32(13)
    x *= _F2
    x ^= x >> np.uint32(16)
    return x


def _ids(tokens: np.ndarray, eos_last: bool) -> np.ndarray:
    ids = np.asarray(tokens)
    if ids.ndim != 1 or ids.dtype.kind not in "ui":
        raise ValueError(f"token ids must be a 1-d integer array, got {ids.dtype} of shape {ids.shape}")
    return ids[:-1] if eos_last and len(ids) else ids


def ngram_hashes(tokens: np.ndarray, ngram: int = DEFAULT_PARAMS.ngram, eos_last: bool = True) -> np.ndarray:
    """The 32-bit hashes of a document's token n-grams (uint32, one per position; may repeat).

    >>> ngram_hashes(np.array([5, 6, 7, 0]), ngram=2).shape  # EOS (0) dropped: (5, 6), (6, 7)
    (2,)
    """
    ids = _ids(tokens, eos_last).astype(np.uint64)
    if len(ids) == 0:
        return np.empty(0, np.uint32)
    n = min(ngram, len(ids))
    m = len(ids) - n + 1
    with np.errstate(over="ignore"):
        h = np.full(m, n, dtype=np.uint64)  # the length first: a short document's one n-gram is its own
        for j in range(n):
            h *= _GOLDEN
            h += ids[j:j + m]
        h = _mix64(h)
    return (h >> np.uint64(32)).astype(np.uint32)


def _permuted(x: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[k, i] = a[k] * x[i] + b[k] mod 2**32``: permutations in rows, so each minimum runs along a
    contiguous row (measured ~4x faster than n-grams in rows and permutations in columns)."""
    np.multiply(a[:, None], x[None, :], out=out)
    out += b[:, None]
    return out


def _min_permuted(hashes: np.ndarray, params: MinHashParams) -> np.ndarray:
    """Signature of one set of n-gram hashes (uint32)."""
    a, b = params.permutations()
    sig = np.full(params.num_perm, EMPTY, dtype=np.uint32)
    x = _fmix32(hashes)
    buf = np.empty((params.num_perm, min(len(x), _CHUNK)), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in range(0, len(x), _CHUNK):
            part = x[i:i + _CHUNK]
            np.minimum(sig, _permuted(part, a, b, buf[:, :len(part)]).min(axis=1), out=sig)
    return sig


def signature(tokens: np.ndarray, params: MinHashParams = DEFAULT_PARAMS, eos_last: bool = True) -> np.ndarray:
    """A document's MinHash signature: ``num_perm`` uint32 values (all ``EMPTY`` for no n-gram).

    >>> s = signature(np.array([1, 2, 3, 4, 5, 6, 0], dtype=np.uint16))
    >>> s.dtype, s.shape, bool((s == signature(np.array([1, 2, 3, 4, 5, 6, 9]))).all())
    (dtype('uint32'), (128,), True)
    """
    return _min_permuted(ngram_hashes(tokens, params.ngram, eos_last), params)


def signatures(docs: Sequence[np.ndarray], params: MinHashParams = DEFAULT_PARAMS,
               eos_last: bool = True) -> np.ndarray:
    """Signatures of many documents, ``(len(docs), num_perm)`` uint32, equal to ``signature`` of each.

    Short documents are done together (their n-grams' permutations reduced per document with
    ``np.minimum.reduceat``), so a batch of small documents costs little Python per document."""
    out = np.full((len(docs), params.num_perm), EMPTY, dtype=np.uint32)
    a, b = params.permutations()
    buf = np.empty((params.num_perm, _CHUNK), dtype=np.uint32)
    hashes: list[np.ndarray] = []
    starts: list[int] = []
    rows: list[int] = []
    size = 0

    def flush():
        nonlocal size
        if rows:
            x = _fmix32(np.concatenate(hashes))
            with np.errstate(over="ignore"):
                block = _permuted(x, a, b, buf[:, :len(x)])
            out[rows] = np.minimum.reduceat(block, starts, axis=1).T
        hashes.clear(), starts.clear(), rows.clear()
        size = 0

    for i, doc in enumerate(docs):
        h = ngram_hashes(doc, params.ngram, eos_last)
        if len(h) == 0:
            continue
        if len(h) > _CHUNK // 2:  # a long document alone, in chunks
            out[i] = _min_permuted(h, params)
            continue
        if size + len(h) > _CHUNK:
            flush()
        starts.append(size)
        rows.append(i)
        hashes.append(h)
        size += len(h)
    flush()
    return out


def band_matrix(sigs: np.ndarray, params: MinHashParams = DEFAULT_PARAMS) -> np.ndarray:
    """Band keys of ``(n, num_perm)`` signatures as an ``(n, bands)`` array of ``rows * 4``-byte values
    (numpy void: equal exactly when the bands are equal; ``.tobytes()`` of one is ``band_keys``'s key)."""
    sigs = np.asarray(sigs, dtype=np.uint32).reshape(-1, params.num_perm)
    big = np.ascontiguousarray(sigs.astype(">u4"))
    return big.view(np.dtype((np.void, 4 * params.rows))).reshape(len(sigs), params.bands)


def band_keys(sig: np.ndarray, params: MinHashParams = DEFAULT_PARAMS) -> list[tuple[int, bytes]]:
    """A signature's LSH keys, ``(band index, rows values as big-endian bytes)``; none for an empty
    document (documents without n-grams are left to exact deduplication).

    >>> keys = band_keys(signature(np.arange(40)))
    >>> len(keys), keys[3][0], len(keys[3][1])
    (16, 3, 32)
    """
    sig = np.asarray(sig, dtype=np.uint32)
    if sig.shape != (params.num_perm,):
        raise ValueError(f"a signature has {params.num_perm} values, got shape {sig.shape}")
    if (sig == EMPTY).all():
        return []
    raw = sig.astype(">u4").tobytes()
    step = 4 * params.rows
    return [(k, raw[k * step:(k + 1) * step]) for k in range(params.bands)]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """The share of equal values: the MinHash estimate of Jaccard similarity (rows of 2-d inputs)."""
    eq = np.asarray(sig_a) == np.asarray(sig_b)
    return eq.mean(axis=-1) if eq.ndim > 1 else float(eq.mean())


def jaccard(tokens_a: np.ndarray, tokens_b: np.ndarray, ngram: int = DEFAULT_PARAMS.ngram,
            eos_last: bool = True) -> float:
    """The exact Jaccard similarity of two documents' n-gram sets (of their 32-bit n-gram hashes)."""
    a = np.unique(ngram_hashes(tokens_a, ngram, eos_last))
    b = np.unique(ngram_hashes(tokens_b, ngram, eos_last))
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


def candidate_probability(s, bands: int = DEFAULT_PARAMS.bands, rows: int = DEFAULT_PARAMS.rows):
    """P(two documents of Jaccard ``s`` share a band) = 1 - (1 - s^rows)^bands.

    >>> round(float(candidate_probability(0.8)), 3), round(float(candidate_probability(0.5)), 3)
    (0.947, 0.061)
    """
    return 1.0 - (1.0 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def removal_probability(s: float, params: MinHashParams = DEFAULT_PARAMS) -> float:
    """P(a pair of Jaccard ``s`` is joined): a candidate (some band equal) and, when ``params.threshold``
    is set, at least ``ceil(threshold * num_perm)`` equal values. Exact for ideal MinHash (each value
    equal with probability s, independently): a dynamic program over bands of (equal values so far,
    some band whole), since a whole band is also ``rows`` equal values.

    >>> round(removal_probability(0.9), 4), round(removal_probability(0.8), 2), round(removal_probability(0.7), 3)
    (0.9995, 0.5, 0.005)
    """
    if params.threshold is None:
        return float(candidate_probability(s, params.bands, params.rows))
    r = params.rows
    per_band = np.array([comb(r, j) * s ** j * (1 - s) ** (r - j) for j in range(r + 1)])
    dp = np.zeros((params.num_perm + 1, 2))  # [equal so far, some band whole]
    dp[0, 0] = 1.0
    for k in range(params.bands):
        nxt = np.zeros_like(dp)
        top = k * r
        for j, p in enumerate(per_band):
            whole = j == r
            nxt[j:top + j + 1, 1] += dp[:top + 1, 1] * p
            nxt[j:top + j + 1, 1 if whole else 0] += dp[:top + 1, 0] * p
        dp = nxt
    need = int(np.ceil(params.threshold * params.num_perm - 1e-9))
    return float(dp[need:, 1].sum())


def params_for(threshold: float, num_perm: int = 128, ngram: int = 5, seed: int = 1,
               catch: float = 0.9) -> MinHashParams:
    """Parameters verified at ``threshold`` whose bands make a candidate of at least ``catch`` of the
    pairs at the threshold: the most rows per band (fewest needless candidates) that still do.

    >>> p = params_for(0.8); (p.bands, p.rows), [(q.bands, q.rows) for q in (params_for(0.7), params_for(0.6))]
    ((16, 8), [(32, 4), (32, 4)])
    """
    for rows in sorted((r for r in range(1, num_perm + 1) if num_perm % r == 0), reverse=True):
        if candidate_probability(threshold, num_perm // rows, rows) >= catch:
            return MinHashParams(ngram, num_perm, num_perm // rows, rows, seed, threshold)
    raise AssertionError("one row per band catches every pair with a value in common")


def lsh_threshold(bands: int, rows: int) -> float:
    """(1/b)^(1/r): where the S-curve is steepest, roughly where P(candidate) crosses one half."""
    return (1.0 / bands) ** (1.0 / rows)


def _integrate(f, lo: float, hi: float, steps: int = 2000) -> float:
    x = np.linspace(lo, hi, steps + 1)
    return float(np.trapezoid(f(x), x)) if hasattr(np, "trapezoid") else float(np.trapz(f(x), x))


def false_rates(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """(false positive area, false negative area) of the S-curve around ``threshold``: the integral of
    P(candidate | s) over [0, threshold] and of 1 - P(candidate | s) over [threshold, 1] (s uniform)."""
    fp = _integrate(lambda s: candidate_probability(s, bands, rows), 0.0, threshold)
    fn = _integrate(lambda s: 1.0 - candidate_probability(s, bands, rows), threshold, 1.0)
    return fp, fn


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """The (bands, rows), bands * rows <= num_perm, minimizing the weighted false areas of
    ``false_rates`` (datasketch's ``MinHashLSH`` chooses its bands this way)."""
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, fn = false_rates(threshold, b, r)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (b, r), err
    return best
