"""Duplicates across a mixture's sources, resolved before the plan (issue 26; docs/DEDUP.md).

    dedup = resolve_duplicates(cfg, caches, rules, near)   # None when the config turns dedup off
    caches = dedup.apply(caches)                           # the plan, selection and pack never see the removed

Every candidate document of every mixed source (a sampled source's: the documents its rule reads,
i.e. what was tokenized of it) is grouped by its content key (the cache's document table,
``dedup/content.py``). From each group one copy is kept by ``dedup/clusters.py``'s keep order: the
source's rank in ``dedup.priority``, then the doc hash, then source, part and row. The others are
removed: they are never candidates, so each source's available tokens shrink and the plan's shares
are shares of what remains. With near dedup, the verified near-duplicate pairs (``mix/near.py``, a Beam
job) join the same graph: a cluster is a connected component of exact and near pairs, one document kept
per cluster, and a removal is "exact" when its content key is the kept document's, else "near". The
result depends only on the caches' tables, the pairs and the config, never on workers or order, and is
kept beside the shards (``layout.DEDUP_FILE``) for ``mixprep inspect``.

Memory: five numpy words per candidate document while resolving (keys, doc hash, place, tokens), and
the keep order is computed only over documents whose key is seen more than once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..cache import TokenCache
from ..config import MixtureConfig
from ..dedup.clusters import EXACT, KEPT, KINDS, NEAR, keep_order, resolve
from ..dedup.removed import Removed
from ..errors import FormatError
from ..storage import atomic_writer
from .select import doc_buckets

__all__ = ["Dedup", "resolve_duplicates", "deduplicated"]

_KEY_COLUMNS = ["content_key_hi", "content_key_lo"]
# One row per removed document: where it is, its tokens, and the document kept in its place.
_ARRAYS = {"removed_source": np.uint16, "removed_part": np.uint32, "removed_row": np.uint32, "n_tokens": np.int64,
           "kept_source": np.uint16, "kept_part": np.uint32, "kept_row": np.uint32, "kind": np.uint8}


class Dedup:
    """A resolution: the removed documents (sorted by source, part, row) and what each source offered before."""

    def __init__(self, sources: tuple[str, ...], arrays: Mapping[str, np.ndarray], before: Mapping[str, dict],
                 normalization: str, priority: tuple[str, ...], exact: bool = True, near: dict | None = None):
        self.sources, self.before = tuple(sources), dict(before)
        self.arrays = {k: np.asarray(arrays[k], dtype=t) for k, t in _ARRAYS.items()}
        self.normalization, self.priority = normalization, tuple(priority)
        self.exact, self.near = exact, near  # near: the MinHash parameters, None when off

    def removed(self, source: str) -> Removed:
        mine = self.arrays["removed_source"] == self.sources.index(source)
        return Removed(self.arrays["removed_part"][mine], self.arrays["removed_row"][mine])

    def apply(self, caches: Mapping[str, TokenCache]) -> dict[str, TokenCache]:
        """The caches seen without the removed documents."""
        return {n: c.without(self.removed(n)) if n in self.sources else c for n, c in caches.items()}

    @property
    def digest(self) -> str:
        """sha256 of the removals: in the plan's hash, so the driver and a plan step agree on them."""
        h = hashlib.sha256(json.dumps([self.sources, self.normalization, self.priority, self.exact, self.near],
                                      sort_keys=True).encode())
        for k in _ARRAYS:
            h.update(self.arrays[k].astype(f"<{self.arrays[k].dtype.str[1:]}").tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        """The manifest's ``dedup`` section: the rule, and per source and per (kept, removed) source pair
        the documents and tokens removed as exact and as near duplicates."""
        a = self.arrays
        kinds = [KINDS[EXACT]] + ([KINDS[NEAR]] if self.near else [])
        per_source = {}
        for i, name in enumerate(self.sources):
            b = self.before[name]
            entry = {"documents_before": b["documents"], "tokens_before": b["tokens"]}
            docs = tokens = 0
            for kind in kinds:
                mine = (a["removed_source"] == i) & (a["kind"] == KINDS.index(kind))
                entry[kind] = {"documents": int(mine.sum()), "tokens": int(a["n_tokens"][mine].sum())}
                docs, tokens = docs + entry[kind]["documents"], tokens + entry[kind]["tokens"]
            per_source[name] = {**entry, "documents_after": b["documents"] - docs, "tokens_after": b["tokens"] - tokens}
        pairs = []
        for k in range(len(self.sources)):
            for r in range(len(self.sources)):
                for kind in kinds:
                    mine = (a["kept_source"] == k) & (a["removed_source"] == r) & (a["kind"] == KINDS.index(kind))
                    if mine.any():
                        pairs.append({"kept": self.sources[k], "removed": self.sources[r], "kind": kind,
                                      "documents": int(mine.sum()), "tokens": int(a["n_tokens"][mine].sum())})
        near = {"near": self.near} if self.near else {}
        return {"exact": self.exact, "normalization": self.normalization, "priority": list(self.priority), **near,
                "rule": "per cluster (equal content keys" + (", verified near pairs" if self.near else "")
                        + "), the copy kept is the first by (priority rank, doc_hash, source, part, row)",
                "documents_removed": int(len(a["n_tokens"])), "tokens_removed": int(a["n_tokens"].sum()),
                "sources": per_source, "pairs": pairs}

    def write(self, path: str, caches: Mapping[str, TokenCache]) -> None:
        """The removals as parquet, with both documents' ids (for ``mixprep inspect --doc``)."""
        a = self.arrays
        ids = {side: _doc_ids(caches, self.sources, a[f"{side}_source"], a[f"{side}_part"], a[f"{side}_row"])
               for side in ("removed", "kept")}
        names = np.asarray(self.sources + ("",), dtype=object)
        table = pa.table({
            "removed_source": pa.array(names[a["removed_source"]].tolist(), pa.string()),
            "removed_doc_id": pa.array(ids["removed"], pa.string()),
            **{k: pa.array(a[k]) for k in ("removed_part", "removed_row", "n_tokens")},
            "kind": pa.array(np.asarray(KINDS, dtype=object)[a["kind"]].tolist(), pa.string()),
            "kept_source": pa.array(names[a["kept_source"]].tolist(), pa.string()),
            "kept_doc_id": pa.array(ids["kept"], pa.string()),
            **{k: pa.array(a[k]) for k in ("kept_part", "kept_row")},
        })
        meta = {"sources": list(self.sources), "before": self.before, "normalization": self.normalization,
                "priority": list(self.priority), "exact": self.exact, "near": self.near}
        table = table.replace_schema_metadata({"mixprep.dedup": json.dumps(meta, sort_keys=True)})
        with atomic_writer(path, "wb") as f:
            pq.write_table(table, f, compression="zstd")

    @classmethod
    def read(cls, path: str) -> "Dedup":
        with storage.open_read(path) as f:
            table = pq.read_table(pa.BufferReader(f.read()))
        meta = json.loads(table.schema.metadata[b"mixprep.dedup"])
        sources = tuple(meta["sources"])
        index = {n: i for i, n in enumerate(sources)}
        arrays = {k: table.column(k).to_numpy() for k in ("removed_part", "removed_row", "n_tokens", "kept_part",
                                                          "kept_row")}
        for side in ("removed", "kept"):
            arrays[f"{side}_source"] = np.array([index[n] for n in table.column(f"{side}_source").to_pylist()],
                                                dtype=np.uint16)
        arrays["kind"] = np.array([KINDS.index(k) for k in table.column("kind").to_pylist()], dtype=np.uint8)
        return cls(sources, arrays, meta["before"], meta["normalization"], tuple(meta["priority"]),
                   meta.get("exact", True), meta.get("near"))


def _doc_ids(caches, sources, src, part, row) -> list[str]:
    """The doc ids at (source, part, row), each part's id column read once."""
    out = [""] * len(src)
    places = np.stack([src, part], axis=1) if len(src) else np.empty((0, 2), np.int64)
    for s, p in np.unique(places, axis=0).tolist():
        mine = np.flatnonzero((src == s) & (part == p))
        column = caches[sources[s]].doc_table(p, columns=["doc_id"]).column("doc_id")
        for i, doc_id in zip(mine.tolist(), column.take(pa.array(row[mine])).to_pylist()):
            out[i] = doc_id
    return out


def resolve_duplicates(cfg: MixtureConfig, caches: Mapping[str, TokenCache], rules: Mapping,
                       near: list | None = None) -> Dedup | None:
    """Duplicates among the candidates of every mixed source (None: dedup is off): exact ones when the
    config asks, and the ``near`` pairs (``mix/near.py``: ((source, part, row), (source, part, row)))."""
    if not (cfg.exact_dedup or cfg.near_dedup):
        return None
    bounds = cfg.bucket_bounds
    names = tuple(s.name for s in cfg.sources if s.name in caches)  # config order: source indices
    cols: dict[str, list] = {k: [] for k in ("src", "part", "row", "hash", "hi", "lo", "n")}
    before, places = {}, {}
    offset = 0
    for si, name in enumerate(names):
        cache = caches[name].without(None)  # every candidate, whatever an earlier resolution removed
        docs = tokens = 0
        for part in range(len(cache.parts)):
            n, bucket, h = doc_buckets(cache, part, bounds, rules.get(name))
            table = cache.doc_table(part, columns=_KEY_COLUMNS)
            if table.schema.names != _KEY_COLUMNS:
                raise FormatError(f"{cache.directory}: its document tables hold no content keys (a cache from "
                                  "before cache version 4); delete it and run again.")
            rows = np.flatnonzero(bucket <= len(bounds))  # the candidates: what a sample rule reads
            docs, tokens = docs + len(rows), tokens + int(n[rows].sum())
            places[(name, part)], offset = (offset, rows), offset + len(rows)
            for k, v in (("src", np.full(len(rows), si, np.uint16)), ("part", np.full(len(rows), part, np.uint32)),
                         ("row", rows.astype(np.uint32)), ("hash", h[rows]), ("n", n[rows]),
                         ("hi", table.column(0).to_numpy()[rows]), ("lo", table.column(1).to_numpy()[rows])):
                cols[k].append(v)
        before[name] = {"documents": docs, "tokens": tokens}
    a = {k: np.concatenate(v) if v else np.empty(0, np.uint64) for k, v in cols.items()}
    pairs = _near_indices(near or [], places) if cfg.near_dedup else None
    arrays = _resolve(a, names, cfg.dedup.priority, cfg.exact_dedup, pairs)
    params = cfg.near_params
    near_meta = {"threshold": params.threshold, "ngram": params.ngram, "num_perm": params.num_perm,
                 "bands": params.bands, "rows": params.rows, "seed": params.seed} if params else None
    return Dedup(names, arrays, before, cfg.dedup.normalization, cfg.dedup.priority, cfg.exact_dedup, near_meta)


def _near_indices(near: list, places: dict) -> np.ndarray:
    """Near pairs as index pairs into the candidate arrays (a pair naming a non-candidate is a bug)."""
    out = np.empty((len(near), 2), np.int64)
    for i, pair in enumerate(near):
        for j, (source, part, row) in enumerate(pair):
            offset, rows = places[(source, part)]
            at = int(np.searchsorted(rows, row))
            if at >= len(rows) or rows[at] != row:
                raise RuntimeError(f"near pair {pair}: {source} part {part} row {row} is not a candidate (a bug)")
            out[i, j] = offset + at
    return out


def _resolve(a: dict, names: tuple[str, ...], priority, exact: bool = True, near: np.ndarray | None = None) -> dict:
    """The removed documents and their kept ones, sorted by the removed one's (source, part, row).
    ``exact``: join equal content keys; ``near``: index pairs of near duplicates."""
    hi, lo = a["hi"].astype(np.uint64), a["lo"].astype(np.uint64)
    involved = np.zeros(len(hi), dtype=bool)  # documents in some pair: the only ones resolution needs
    if exact:
        by_key = np.lexsort((lo, hi))
        same = (hi[by_key][1:] == hi[by_key][:-1]) & (lo[by_key][1:] == lo[by_key][:-1])
        involved[by_key[1:][same]] = True
        involved[by_key[:-1][same]] = True
    near = np.empty((0, 2), np.int64) if near is None else np.asarray(near, np.int64).reshape(-1, 2)
    involved[near.ravel()] = True
    sub = np.flatnonzero(involved)
    if not len(sub):
        return {k: np.empty(0, t) for k, t in _ARRAYS.items()}
    at = np.full(len(hi), -1, np.int64)
    at[sub] = np.arange(len(sub))
    src, part, row = a["src"].astype(np.int64)[sub], a["part"][sub], a["row"][sub]
    order = keep_order([names[s] for s in src.tolist()], a["hash"][sub], part, row, priority)
    keys = np.stack([hi[sub], lo[sub]], axis=1)
    kept, kind = resolve(order, keys if exact else None, at[near] if len(near) else None)
    if not exact:  # a byte copy found only by its near pair is still the same text
        kind[(kind == NEAR) & (keys == keys[kept]).all(axis=1)] = EXACT
    gone = np.flatnonzero(kind != KEPT)
    r, k = sub[gone], sub[kept[gone]]
    out = {"removed_source": a["src"][r], "removed_part": a["part"][r], "removed_row": a["row"][r],
           "n_tokens": a["n"][r], "kept_source": a["src"][k], "kept_part": a["part"][k], "kept_row": a["row"][k],
           "kind": kind[gone]}
    order = np.lexsort((out["removed_row"], out["removed_part"], out["removed_source"]))
    return {key: v[order] for key, v in out.items()}


def deduplicated(cfg: MixtureConfig, caches: Mapping[str, TokenCache], rules: Mapping,
                 near: list | None = None) -> tuple[dict[str, TokenCache], Dedup | None]:
    """``caches`` without the documents dedup removes (as they are, when it is off), and the resolution."""
    dedup = resolve_duplicates(cfg, caches, rules, near)
    return (dedup.apply(caches) if dedup else dict(caches)), dedup
