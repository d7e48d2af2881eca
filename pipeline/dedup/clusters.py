"""Duplicate clusters resolved deterministically: which document is kept, and in whose place each other goes.

A cluster is a connected component of the duplicate graph: documents with the same content key
(``content.py``) and near-duplicate pairs (``minhash.py``'s candidates, verified or not) are its edges,
so A~B and B~C put A, B and C in one cluster even when A and C were never compared.

The kept document of a cluster is the first in **keep order**:

1. the rank of its source in the priority list (the config's order; sources not listed come after
   every listed one, all at the same rank),
2. then its ``doc_hash`` (``hashing.doc_hash`` of its doc id: stable, spread uniformly),
3. then source name, part and row (a total order, should two doc hashes ever be equal).

``keep_key`` is that order as a tuple; ``keep_order`` the same order over arrays. The outcome depends
only on the documents and edges, never on their input order, the worker count or Python's ``hash()``.

Each removed document gets the kept document of its cluster (itself never removed) and a kind:
``exact`` when its content key equals the kept document's, ``near`` otherwise (so a copy of a near
duplicate is "near" of the document that survives).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["KEPT", "EXACT", "NEAR", "KINDS", "DocRef", "Removal", "keep_key", "ref_of", "source_rank", "keep_order",
           "components", "group_pairs", "candidate_pairs", "verify_pairs", "resolve", "removals"]

KEPT, EXACT, NEAR = 0, 1, 2
KINDS = ("kept", "exact", "near")


class DocRef(NamedTuple):
    """A document: where it is in its source's cache, and its stable hash."""

    source: str
    part: int
    row: int
    doc_hash: int


class Removal(NamedTuple):
    removed: DocRef
    kept: DocRef
    kind: str  # "exact" or "near"


def source_rank(source: str, priority: Sequence[str]) -> int:
    """A source's place in the priority list; unlisted sources share the rank after the last."""
    try:
        return list(priority).index(source)
    except ValueError:
        return len(priority)


_SHIFT = 1 << 63


def keep_key(ref: DocRef, priority: Sequence[str]) -> tuple[int, int, str, int, int]:
    """The keep order as a plain tuple (smaller is kept): (rank, doc_hash - 2**63, source, part, row).

    The shift keeps the doc hashes' order and fits them in a signed 64-bit integer, which Beam's
    integer coder needs (a uint64 above 2**63 does not encode).

    >>> keep_key(DocRef("pile", 0, 3, 2**63 + 42), ["c4", "pile"])
    (1, 42, 'pile', 0, 3)
    """
    return (source_rank(ref.source, priority), int(ref.doc_hash) - _SHIFT, ref.source, int(ref.part), int(ref.row))


def ref_of(key: tuple) -> DocRef:
    """The DocRef a ``keep_key`` tuple was made from."""
    _, shifted, source, part, row = key
    return DocRef(source, part, row, shifted + _SHIFT)


def keep_order(sources: Sequence[str], doc_hashes: np.ndarray, parts: np.ndarray, rows: np.ndarray,
               priority: Sequence[str]) -> np.ndarray:
    """Document indices in keep order (the order ``keep_key`` sorts in)."""
    names = np.asarray(sources, dtype=object)
    uniq, code = np.unique(names.astype(str), return_inverse=True)  # codes follow name order
    rank = np.array([source_rank(s, priority) for s in uniq], dtype=np.int64)[code]
    return np.lexsort((np.asarray(rows, np.int64), np.asarray(parts, np.int64), code,
                       np.asarray(doc_hashes, np.uint64), rank))


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of n nodes: each node's label is the smallest node of its component.

    Vectorized union-find: every round hooks the larger root of each edge under the smaller
    (``np.minimum.at``) and then compresses paths to roots; rounds repeat until no edge joins two
    roots. Labels only decrease, so it ends; the smallest node ends up the root whatever the edge order.

    >>> components(5, np.array([[3, 4], [1, 3]])).tolist()
    [0, 1, 2, 1, 1]
    """
    parent = np.arange(n, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"pair indices must be in [0, {n})")
    u, v = pairs[:, 0], pairs[:, 1]
    while len(u):
        pu, pv = parent[u], parent[v]
        lo, hi = np.minimum(pu, pv), np.maximum(pu, pv)
        live = lo != hi
        if not live.any():
            break
        u, v, lo, hi = u[live], v[live], lo[live], hi[live]  # edges inside a component stay settled
        np.minimum.at(parent, hi, lo)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def _rank_of(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank


def group_pairs(keys: np.ndarray, order: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pairs joining documents with equal ``keys`` (one row per document; any dtype numpy can sort,
    e.g. a void view): a star from each group's first document in keep order to each other member.
    Rows where ``valid`` is False join nothing."""
    keys = np.asarray(keys)
    if keys.ndim == 2:  # (n, k) rows compared whole: a void view sorts and compares bytewise
        keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()
    idx = np.asarray(order, dtype=np.int64)
    if valid is not None:
        idx = idx[np.asarray(valid, bool)[idx]]
    if len(idx) < 2:
        return np.empty((0, 2), np.int64)
    # Stable sort by key keeps keep order inside each group: the group's first is its best document.
    by_key = idx[np.argsort(keys[idx], kind="stable")]
    k = keys[by_key]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    head = np.repeat(by_key[starts], np.diff(np.r_[starts, len(by_key)]))
    member = head != by_key
    return np.stack([head[member], by_key[member]], axis=1)


def candidate_pairs(bands: np.ndarray, order: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Near-duplicate candidates from an ``(n, bands)`` band-key matrix (``minhash.band_matrix``):
    documents sharing a band, as stars from the best document of each band's bucket, deduplicated
    and sorted. ``valid``: rows that take part (e.g. not empty documents)."""
    found = [group_pairs(bands[:, j], order, valid) for j in range(bands.shape[1])]
    pairs = np.concatenate(found) if found else np.empty((0, 2), np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def verify_pairs(pairs: np.ndarray, sigs: np.ndarray, threshold: float) -> np.ndarray:
    """The pairs whose estimated Jaccard (share of equal signature values) is at least ``threshold``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return pairs
    est = (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)
    return pairs[est >= threshold]


def resolve(order: np.ndarray, exact_keys: np.ndarray | None = None,
            near_pairs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resolve duplicates: ``(kept, kind)``, both of length n. ``kept[i]`` is the index of the document
    kept in document i's place (i when i is kept) and ``kind[i]`` KEPT, EXACT or NEAR.

    ``order``: the documents in keep order (``keep_order``); ``exact_keys``: their content keys
    (``content.content_keys``, ``(n, 2)``), or None for no exact deduplication; ``near_pairs``: index
    pairs of near duplicates, or None.

    >>> order = np.array([2, 0, 1, 3])  # document 2 is the most preferred
    >>> keys = np.array([[1, 1], [5, 5], [1, 1], [7, 7]], dtype=np.uint64)
    >>> kept, kind = resolve(order, keys, np.array([[1, 3]]))
    >>> kept.tolist(), kind.tolist()
    ([2, 1, 2, 1], [1, 0, 0, 2])
    """
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    rank = _rank_of(order)
    edges = [np.empty((0, 2), np.int64)]
    if exact_keys is not None:
        keys = np.asarray(exact_keys, dtype=np.uint64).reshape(n, -1)
        edges.append(group_pairs(keys, order))
    if near_pairs is not None:
        edges.append(np.asarray(near_pairs, dtype=np.int64).reshape(-1, 2))
    # In rank space the smallest node of a component is its best document: the root is the one kept.
    root = components(n, rank[np.concatenate(edges)])
    kept = order[root[rank]]
    kind = np.where(kept == np.arange(n), KEPT, NEAR).astype(np.uint8)
    if exact_keys is not None:
        same = (keys == keys[kept]).all(axis=1)
        kind[(kind == NEAR) & same] = EXACT
    return kept, kind


def removals(refs: Sequence[DocRef], kept: np.ndarray, kind: np.ndarray) -> list[Removal]:
    """The removed documents of a resolution as Removals, sorted by the removed document's ref."""
    out = [Removal(refs[i], refs[int(kept[i])], KINDS[int(kind[i])]) for i in np.flatnonzero(kind != KEPT)]
    return sorted(out)
