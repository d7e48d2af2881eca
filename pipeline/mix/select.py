"""Select documents exactly: which documents, how many copies, to hit each bucket's token target.

For a bucket with target T over A available tokens, every document gets ``floor(T / A)`` copies, and
the remaining ``R = T - floor(T/A) * A`` tokens come from one extra copy of the documents whose
selection key (``hashing.decision_keys(..., SELECT, 0)``) is smallest. Near the point where the
running token count reaches R, a window of documents (the last 32 that fit, the next 96 in key
order) is settled by an exact subset sum: the window's subset closest to what is still missing.
When documents are small next to the target (any real corpus) that lands within a few tokens; when
a bucket holds a few dozen long documents it still finds the best combination of them, which plain
key order (within one document) would miss by thousands of tokens. Each bucket's rounding is
carried into the next, longest first, so the source as a whole lands within a few tokens. Keys are
uniform and the window is a few dozen documents out of the bucket, so the extra copies are a
uniform sample of the bucket.

Finding the cut streams the document tables with bounded memory: a histogram of tokens over the
keys' top 16 bits finds the bin where the cut falls; only the window's bins are then sorted (one
more pass per bucket; a source of a few million documents is read once and held instead).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..cache import TokenCache
from ..hashing import SELECT, decision_keys, held_out_purpose
from ..sampling import SampleRule, sample_units

__all__ = ["BucketSelection", "SplitRule", "TRAIN", "select_source", "doc_buckets", "doc_arrays",
           "candidates_by_bucket", "rule_tokens", "copies_for", "selected_by_subset"]

DOC_COLUMNS = ["n_tokens", "doc_hash", "n_chars"]  # what doc_buckets reads (n_chars only with a sample rule)
_BIN_BITS = 16
_BINS = 1 << _BIN_BITS
_SHIFT = np.uint64(64 - _BIN_BITS)
_WINDOW_BEFORE = 32  # documents before the cut that the closing subset sum may swap out
_WINDOW_AFTER = 96  # and documents past the cut that it may take instead
_MAX_SUM = 1 << 22  # bound on the subset sum's token counts (a 512 KiB bitset per window item)
_HOLD_DOCS = 2 << 20  # a source with at most this many documents is read once and held (64 MiB at most)


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

    @classmethod
    def from_dict(cls, d: dict) -> "BucketSelection":
        return cls(**{**d, "fill": tuple(d["fill"])})


TRAIN = "train"  # SplitRule.keep of the training mixture: what no held-out split took


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """The documents of a source that one split may take, when held-out splits exist (held_out.py).

    Each held-out split, in order, takes the documents its selections pick by its own keys
    (``decision_keys(..., held_out_purpose(split), 0)``) among those no earlier split took; training
    (``keep=TRAIN``) takes from what none took. ``sample``: the source's sample rule, applied first.
    """

    seed: int
    source: str
    held: tuple[tuple[str, tuple[BucketSelection, ...]], ...]  # (split, selections) in drawing order
    keep: str  # TRAIN or one of held's splits
    sample: SampleRule | None = None

    def split_of(self, h: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Each document's split: an index into ``held``, ``len(held)`` for training (or none)."""
        out = np.full(len(h), len(self.held), dtype=np.int64)
        for i, (split, selections) in enumerate(self.held):
            keys = decision_keys(h, self.seed, self.source, held_out_purpose(split), 0)
            mine = copies_for(bucket, keys, selections) > 0
            out[mine] = i
            bucket = np.where(mine, len(selections), bucket)  # a bucket no selection covers
        return out

    def candidate_mask(self, h: np.ndarray, n_chars: np.ndarray | None, bucket: np.ndarray) -> np.ndarray:
        keep = np.ones(len(h), dtype=bool)
        if self.sample is not None:
            keep = self.sample.candidate_mask(sample_units(h), n_chars, bucket)
            bucket = np.where(keep, bucket, len(self.sample.bounds) + 1)
        index = [s for s, _ in self.held].index(self.keep) if self.keep != TRAIN else len(self.held)
        return keep & (self.split_of(h, bucket) == index)

    def to_dict(self) -> dict:
        return {"held": [[split, [s.to_dict() for s in sel]] for split, sel in self.held], "keep": self.keep,
                "sample": self.sample.to_dict() if self.sample else None}


def doc_buckets(cache: TokenCache, part: int, bounds: Sequence[int], rule: SampleRule | SplitRule | None = None,
                table: pa.Table | None = None):
    """(n_tokens, bucket, doc_hash) arrays of one cache part (``table``: its document table, when read
    already with these columns and others).

    With a sample rule (or a split rule), documents that are not candidates of their bucket get
    bucket ``len(bounds) + 1``, which no selection covers: they are never taken. So do documents
    removed as duplicates (``cache.removed``, set by ``mix.dedup``): every plan, selection, held-out
    split, pack stage and count reads documents through here.
    """
    sample = rule.sample if isinstance(rule, SplitRule) else rule
    if table is None:
        table = cache.doc_table(part, columns=DOC_COLUMNS if sample else DOC_COLUMNS[:2])
    n = table.column("n_tokens").to_numpy().astype(np.int64)
    h = table.column("doc_hash").to_numpy().astype(np.uint64)
    bucket = np.searchsorted(np.asarray(bounds, dtype=np.int64), n, side="right")
    if rule is not None:
        chars = table.column("n_chars").to_numpy() if sample else None
        mask = rule.candidate_mask(h, chars, bucket) if isinstance(rule, SplitRule) else \
            rule.candidate_mask(sample_units(h), chars, bucket)
        bucket = np.where(mask, bucket, len(bounds) + 1)
    if cache.removed is not None:
        bucket[cache.removed.rows_of(part)] = len(bounds) + 1
    return n, bucket, h


def doc_arrays(cache: TokenCache, part: int, bounds: Sequence[int], seed: int, source: str,
               rule: SampleRule | SplitRule | None = None, purpose: str = SELECT):
    """``doc_buckets`` and each document's selection key (a held-out split's: its own ``purpose``)."""
    n, bucket, h = doc_buckets(cache, part, bounds, rule)
    return n, bucket, h, decision_keys(h, seed, source, purpose, 0)


def candidates_by_bucket(cache: TokenCache, bounds: Sequence[int],
                         rule: SampleRule | None = None) -> tuple[list[int], list[int]]:
    """(tokens, documents) per length bucket of the documents selection may take (all, without a rule)."""
    nb = len(bounds) + 1
    tokens, docs = np.zeros(nb + 1, dtype=np.int64), np.zeros(nb + 1, dtype=np.int64)
    for part in range(len(cache.parts)):
        n, bucket, _ = doc_buckets(cache, part, bounds, rule)
        tokens += np.bincount(bucket, weights=n, minlength=nb + 1).astype(np.int64)
        docs += np.bincount(bucket, minlength=nb + 1)
    return tokens[:nb].tolist(), docs[:nb].tolist()


def rule_tokens(cache: TokenCache, rule: SampleRule) -> int:
    """Tokens of the documents ``rule`` tokenizes (what a cache built with it holds)."""
    if cache.rule == rule:
        return cache.stats["tokens"]
    total = 0
    for part in range(len(cache.parts)):
        table = cache.doc_table(part, columns=["n_tokens", "doc_hash", "n_chars"])
        keep = rule.tokenize_mask(sample_units(table.column("doc_hash").to_numpy()), table.column("n_chars").to_numpy())
        total += int(table.column("n_tokens").to_numpy()[keep].astype(np.int64).sum())
    return total


def copies_for(bucket: np.ndarray, keys: np.ndarray, selections: Sequence[BucketSelection]) -> np.ndarray:
    """Number of copies of each document, from its bucket and selection key (0 outside every bucket)."""
    full = np.array([s.full_copies for s in selections] + [0], dtype=np.int64)
    cut = np.array([s.cut for s in selections] + [0], dtype=np.uint64)
    extra = keys < cut[bucket]
    for b, s in enumerate(selections):
        if s.fill:
            extra |= (bucket == b) & np.isin(keys, np.array(s.fill, dtype=np.uint64))
    return full[bucket] + extra.astype(np.int64)


def selected_by_subset(cache: TokenCache, source: str, bounds: Sequence[int], seed: int,
                       selections: Sequence[BucketSelection], rule: SampleRule | None = None) -> dict[str, dict]:
    """{subset: {documents, copies, tokens}} of what selection took from one source (copies counted in
    tokens), by the same ``copies_for`` the pack stage routes with: one more pass over the document tables."""
    out: dict[str, list[int]] = {}
    for part in range(len(cache.parts)):
        n, bucket, _, keys = doc_arrays(cache, part, bounds, seed, source, rule)
        copies = copies_for(bucket, keys, selections)
        subsets = cache.doc_table(part, columns=["subset"]).column("subset").to_numpy(zero_copy_only=False)
        names, index = np.unique(subsets, return_inverse=True)
        documents = np.bincount(index, weights=copies > 0, minlength=len(names))
        counts = np.bincount(index, weights=copies, minlength=len(names))
        tokens = np.bincount(index, weights=copies * n, minlength=len(names))
        for k, name in enumerate(names.tolist()):
            t = out.setdefault(name, [0, 0, 0])
            t[0], t[1], t[2] = t[0] + int(documents[k]), t[1] + int(counts[k]), t[2] + int(tokens[k])
    return {name: {"documents": d, "copies": c, "tokens": t} for name, (d, c, t) in sorted(out.items()) if c}


def _parts(cache: TokenCache, bounds, seed, source, rule, purpose) -> Iterator[tuple]:
    for part in range(len(cache.parts)):
        yield doc_arrays(cache, part, bounds, seed, source, rule, purpose)


class _Passes:
    """The parts' ``doc_arrays``, pass after pass (selection makes one more per bucket): a small
    source's arrays are held after the first full pass, a large one's are read again each time."""

    def __init__(self, cache: TokenCache, bounds, seed, source, rule, purpose):
        self._args = (cache, bounds, seed, source, rule, purpose)
        self._hold = sum(p["documents"] for p in cache.parts) <= _HOLD_DOCS
        self._held: list[tuple] | None = None

    def __iter__(self) -> Iterator[tuple]:
        if self._held is not None:
            yield from self._held
            return
        read = []
        for arrays in _parts(*self._args):
            if self._hold:
                read.append(arrays)
            yield arrays
        if self._hold:
            self._held = read


def select_source(
    cache: TokenCache, source: str, bounds: Sequence[int], targets: Sequence[int], available: Sequence[int], seed: int,
    rule: SampleRule | SplitRule | None = None, purpose: str = SELECT,
) -> list[BucketSelection]:
    """Cuts for every bucket of one source so that its selected tokens hit ``targets``.

    ``available``: the tokens selection may take per bucket (with a rule: the candidates').
    ``purpose``: whose keys order the documents (a held-out split's own, held_out.py).
    """
    nb = len(targets)
    hist = np.zeros((nb + 1, _BINS), dtype=np.int64)  # tokens per (bucket, key bin); row nb: not candidates
    hist_docs = np.zeros((nb + 1, _BINS), dtype=np.int64)
    parts = _Passes(cache, bounds, seed, source, rule, purpose)
    for n, bucket, _, keys in parts:
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
        cut, fill, extra_tokens, extra_docs = _cut(parts, b, hist[b], hist_docs[b], remainder)
        selected = full * available[b] + extra_tokens
        out[b] = BucketSelection(full, cut, fill, target, selected, full * int(docs[b]) + extra_docs)
        carry = selected - target
    return out


def _cut(parts, b, hist_b, hist_docs_b, remainder) -> tuple[int, tuple[int, ...], int, int]:
    """(cut key, fill keys, tokens, documents) of the extra copies that make ``remainder`` tokens.

    Documents are taken in key order while they fit. The last few of them and the next few after
    them form a window; the subset of the window whose tokens come closest to what is still missing
    (a subset sum, solved exactly over token counts) replaces them. Documents below the window's
    first key are in, the chosen window documents are listed as ``fill``.
    """
    if remainder <= 0:
        return 0, (), 0, 0
    cum = np.cumsum(hist_b)
    cum_docs = np.cumsum(hist_docs_b)
    j = int(np.searchsorted(cum, remainder, side="left"))  # the bin where the running sum reaches R
    # Candidate bins j0..j_end: a few documents before the bin of the cut (the window may swap them
    # out) and enough after it to hold the fill candidates (a handful of bins at scale).
    docs_to_j = int(cum_docs[j - 1]) if j else 0
    j0 = int(np.searchsorted(cum_docs, docs_to_j - _WINDOW_BEFORE, side="right")) if docs_to_j > _WINDOW_BEFORE else 0
    j0 = min(j0, j)
    base = int(cum[j0 - 1]) if j0 else 0
    docs_before = int(cum_docs[j0 - 1]) if j0 else 0
    after = cum_docs[j:] - docs_to_j
    j_end = j + min(int(np.searchsorted(after, _WINDOW_AFTER, side="left")), len(after) - 1)
    keys, counts = [], []
    for n, bucket, _, k in parts:
        bins = (k >> _SHIFT).astype(np.int64)
        sel = (bucket == b) & (bins >= j0) & (bins <= j_end)
        keys.append(k[sel])
        counts.append(n[sel])
    keys_j, n_j = np.concatenate(keys), np.concatenate(counts)
    order = np.argsort(keys_j, kind="stable")
    keys_j, n_j = keys_j[order], n_j[order]
    running = base + np.cumsum(n_j)
    take = int(np.searchsorted(running, remainder, side="right"))  # documents that fit entirely
    # The window: up to _WINDOW_BEFORE of the documents taken, then up to _WINDOW_AFTER more.
    start = max(0, take - _WINDOW_BEFORE)
    while start < take and int(running[take - 1]) - (int(running[start - 1]) if start else base) > _MAX_SUM // 2:
        start += 1  # keep the subset sum small when documents are huge
    stop = min(len(n_j), take + _WINDOW_AFTER)
    fixed = int(running[start - 1]) if start else base
    chosen, tokens = _closest_subset(n_j[start:stop], remainder - fixed)
    cut = int(keys_j[start]) if start < len(keys_j) else min((j_end + 1) << (64 - _BIN_BITS), 2**64 - 1)
    fill = tuple(sorted(int(keys_j[start + i]) for i in chosen))
    return cut, fill, fixed + tokens, docs_before + start + len(chosen)


def _closest_subset(sizes: np.ndarray, goal: int) -> tuple[list[int], int]:
    """Indices of the subset of ``sizes`` whose sum is closest to ``goal`` (ties: the smaller sum).

    Exact, by a bitset over reachable sums (Python integers: bit s set = sum s reachable), kept per
    item so the subset can be read back. Sums are bounded by ``_MAX_SUM``; larger items are skipped.
    """
    if goal <= 0 or not len(sizes):
        return [], 0
    limit = min(goal + int(sizes.max()), _MAX_SUM)
    mask = (1 << (limit + 1)) - 1
    reach = [1]  # reach[i]: sums reachable with the first i items
    for size in sizes.tolist():
        r = reach[-1]
        reach.append(r if size > limit else (r | (r << size)) & mask)
    reachable = np.frombuffer(reach[-1].to_bytes((limit + 8) // 8, "little"), dtype=np.uint8)
    bits = np.unpackbits(reachable, bitorder="little")
    sums = np.flatnonzero(bits)
    best = int(sums[np.argmin(np.abs(sums - goal))])  # argmin: first, i.e. smaller, on a tie
    chosen, s = [], best
    for i in range(len(sizes), 0, -1):
        if not (reach[i - 1] >> s) & 1:
            chosen.append(i - 1)
            s -= int(sizes[i - 1])
    return sorted(chosen), best
