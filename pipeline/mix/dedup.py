"""Duplicates across a mixture's sources, resolved before the plan (issue 26; docs/DEDUP.md).

    dedup = resolve_duplicates(cfg, caches, rules, out, near)   # None when the config turns dedup off
    caches = dedup.apply(caches)                                # the plan, selection and pack never see the removed

Every candidate document of every mixed source (a sampled source's: the documents its rule reads,
i.e. what was tokenized of it) is grouped by its content key (the cache's document table,
``dedup/content.py``). From each group one copy is kept by ``dedup/clusters.py``'s keep order: the
source's rank in ``dedup.priority``, then the doc hash, then source, part and row. The others are
removed: they are never candidates, so each source's available tokens shrink and the plan's shares
are shares of what remains. With near dedup, the verified near-duplicate pairs (``mix/near.py``, a Beam
job) join the same graph: a cluster is a connected component of exact and near pairs, one document kept
per cluster, and a removal is "exact" when its content key is the kept document's, else "near". The
result depends only on the caches' tables, the pairs and the config, never on workers or order.

Memory is bounded whatever the corpus (docs/SCALING.md): the candidates (40 bytes each) are spread by
their key's leading bits over partitions (``dedup/spill.py``: in memory up to a budget, on local disk
past it; ``MIXPREP_DEDUP_MEMORY_MB``), and each partition is resolved alone, since equal keys share a
partition. Only the groups a
near pair touches are held back and resolved together. The removals go the same way, by cache part,
into the resolution's folder (``dedup/removed.py``, ``OUT/_dedup/<id>/``): every later pass reads the
removed rows of the part it works on from there, and the resolution's id (a hash of its inputs) lets a
second planner of the same run (a one-pipeline run's driver after its plan step) read it instead of
resolving again. ``finish`` turns it into ``layout.DEDUP_FILE`` for ``mixprep inspect`` and removes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..cache import TokenCache
from ..config import MixtureConfig
from ..dedup.clusters import EXACT, KEPT, KINDS, NEAR, keep_order, resolve
from ..dedup.removed import REMOVAL, Removed, index_path, read_records, records_path
from ..dedup.spill import Spill, memory_budget, partitions_for
from ..errors import FormatError
from ..layout import dedup_dir
from ..storage import atomic_writer, read_json, write_json
from .select import DOC_COLUMNS, doc_buckets

__all__ = ["Dedup", "resolve_duplicates", "deduplicated", "PARTITION_BYTES"]

log = logging.getLogger("mixprep")

RESOLUTION_FORMAT = 1  # in the resolution id: a folder written by another format is never read
# The records a partition aims at (None: an eighth of spill.memory_budget; resolving one takes ~2.7x).
PARTITION_BYTES: int | None = None
MAX_PARTITIONS = 4096
_KEY_COLUMNS = ["content_key_hi", "content_key_lo"]
# One candidate: its content key, doc hash, tokens, and place (a number for (source, part, row):
# the documents of all parts counted in order, ``_Places``).
_CANDIDATE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("hash", "<u8"), ("n", "<i8"), ("place", "<u8")])
_PARQUET = pa.schema([("removed_source", pa.string()), ("removed_doc_id", pa.string()),
                      ("removed_part", pa.uint32()), ("removed_row", pa.uint32()), ("n_tokens", pa.int64()),
                      ("kind", pa.string()), ("kept_source", pa.string()), ("kept_part", pa.uint32()),
                      ("kept_row", pa.uint32())])


class Dedup:
    """A resolution, as its folder's index says: the rule, what each source offered before, the
    counts removed, and where the removal records are (read on demand: ``records``, ``removed``)."""

    def __init__(self, folder: str, index: dict):
        self.folder, self.index = folder, index
        self.sources = tuple(index["sources"])
        self.before = index["before"]
        self.normalization, self.priority = index["normalization"], tuple(index["priority"])
        self.exact, self.near = index["exact"], index["near"]  # near: the MinHash parameters, None when off

    @classmethod
    def load(cls, folder: str) -> "Dedup | None":
        path = index_path(folder)
        return cls(folder, read_json(path)) if storage.exists(path) else None

    @property
    def digest(self) -> str:
        """sha256 of the rule and the removal records: in the plan's hash."""
        return self.index["digest"]

    def removed(self, source: str) -> Removed:
        return Removed(self.folder, source, self.index["removed"][source], self.digest)

    def apply(self, caches: Mapping[str, TokenCache]) -> dict[str, TokenCache]:
        """The caches seen without the removed documents."""
        return {n: c.without(self.removed(n)) if n in self.sources else c for n, c in caches.items()}

    def records(self) -> Iterator[np.ndarray]:
        """The removal records (``dedup.removed.REMOVAL``), file by file, in (source, part, row) order."""
        for file in range(self.index["files"]):
            yield read_records(self.folder, file)

    def summary(self) -> dict:
        """The manifest's ``dedup`` section: the rule, and per source and per (kept, removed) source pair
        the documents and tokens removed as exact and as near duplicates."""
        counts, pairs_at = np.asarray(self.index["counts"], np.int64), np.asarray(self.index["pairs"], np.int64)
        kinds = [EXACT] + ([NEAR] if self.near else [])
        per_source = {}
        for i, name in enumerate(self.sources):
            b = self.before[name]
            entry = {"documents_before": b["documents"], "tokens_before": b["tokens"]}
            for kind in kinds:
                entry[KINDS[kind]] = {"documents": int(counts[i, kind, 0]), "tokens": int(counts[i, kind, 1])}
            docs, tokens = (int(counts[i, kinds, j].sum()) for j in (0, 1))
            per_source[name] = {**entry, "documents_after": b["documents"] - docs, "tokens_after": b["tokens"] - tokens}
        pairs = [{"kept": self.sources[k], "removed": self.sources[r], "kind": KINDS[kind],
                  "documents": int(pairs_at[k, r, kind, 0]), "tokens": int(pairs_at[k, r, kind, 1])}
                 for k in range(len(self.sources)) for r in range(len(self.sources)) for kind in kinds
                 if pairs_at[k, r, kind, 0]]
        near = {"near": self.near} if self.near else {}
        return {"exact": self.exact, "normalization": self.normalization, "priority": list(self.priority), **near,
                "rule": "per cluster (equal content keys" + (", verified near pairs" if self.near else "")
                        + "), the copy kept is the first by (priority rank, doc_hash, source, part, row)",
                "documents_removed": int(counts[:, :, 0].sum()), "tokens_removed": int(counts[:, :, 1].sum()),
                "sources": per_source, "pairs": pairs}

    def write(self, path: str, caches: Mapping[str, TokenCache]) -> None:
        """The removals as parquet (a row group per records file), with the removed document's id: what
        ``mixprep inspect --doc`` reads. The kept document's id is looked up in its cache when asked."""
        meta = {k: self.index[k] for k in ("sources", "before", "normalization", "priority", "exact", "near")}
        schema = _PARQUET.with_metadata({"mixprep.dedup": json.dumps(meta, sort_keys=True)})
        names = np.asarray(self.sources, dtype=object)
        with atomic_writer(path, "wb") as f, pq.ParquetWriter(f, schema, compression="zstd") as w:
            for r in self.records():
                w.write_table(pa.table({
                    "removed_source": pa.array(names[r["removed_source"]].tolist(), pa.string()),
                    "removed_doc_id": pa.array(_doc_ids(caches, self.sources, r), pa.string()),
                    **{k: pa.array(r[k]) for k in ("removed_part", "removed_row", "n_tokens")},
                    "kind": pa.array(np.asarray(KINDS, dtype=object)[r["kind"]].tolist(), pa.string()),
                    "kept_source": pa.array(names[r["kept_source"]].tolist(), pa.string()),
                    **{k: pa.array(r[k]) for k in ("kept_part", "kept_row")},
                }, schema=schema))


def _doc_ids(caches, sources, r: np.ndarray) -> list[str]:
    """The removed documents' ids (records sorted by source, part, row), each part's id column read once."""
    out: list[str] = []
    for a, b in _part_runs(r):
        column = caches[sources[r["removed_source"][a]]].doc_table(int(r["removed_part"][a]), columns=["doc_id"])
        out += column.column("doc_id").take(pa.array(r["removed_row"][a:b])).to_pylist()
    return out


def _part_runs(r: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each cache part's run of removal records (sorted by source, part, row)."""
    if not len(r):
        return []
    new = (r["removed_source"][1:] != r["removed_source"][:-1]) | (r["removed_part"][1:] != r["removed_part"][:-1])
    starts = np.flatnonzero(np.r_[True, new]).tolist()
    return list(zip(starts, starts[1:] + [len(r)]))


def resolve_duplicates(cfg: MixtureConfig, caches: Mapping[str, TokenCache], rules: Mapping, out: str,
                       near: list | None = None) -> Dedup | None:
    """Duplicates among the candidates of every mixed source (None: dedup is off): exact ones when the
    config asks, and the ``near`` pairs (``mix/near.py``: ((source, part, row), (source, part, row))).
    Written to (or, when resolved already, read from) the resolution's folder under ``out``."""
    if not (cfg.exact_dedup or cfg.near_dedup):
        return None
    names = tuple(s.name for s in cfg.sources if s.name in caches)  # config order: source indices
    caches = {n: caches[n].without(None) for n in names}  # every candidate, whatever an earlier resolution removed
    params = cfg.near_params
    near_meta = {"threshold": params.threshold, "ngram": params.ngram, "num_perm": params.num_perm,
                 "bands": params.bands, "rows": params.rows, "seed": params.seed} if params else None
    rule = {"sources": list(names), "normalization": cfg.dedup.normalization, "priority": list(cfg.dedup.priority),
            "exact": cfg.exact_dedup, "near": near_meta}
    pairs = sorted(tuple(map(tuple, p)) for p in near or []) if cfg.near_dedup else []
    rid = _resolution_id(rule, caches, rules, cfg.bucket_bounds, pairs)
    folder = storage.join(dedup_dir(out), rid[:20])
    done = Dedup.load(folder)
    if done is not None and done.index.get("id") == rid:
        log.info("dedup: the resolution in %s (made earlier in this run)", folder)
        return done
    index = _Resolution(rule, caches, rules, cfg.bucket_bounds).run(folder, pairs)
    write_json(index_path(folder), {**index, "id": rid})  # last: the folder is complete
    log.info("dedup: %s of %s candidate documents removed (%d key partitions, %.0f MiB spilled to local disk)",
             f"{sum(index['removed'].values()):,}", f"{sum(b['documents'] for b in index['before'].values()):,}",
             index["key_partitions"], index["spilled"] / 2**20)
    return Dedup.load(folder)


def _resolution_id(rule: dict, caches: Mapping[str, TokenCache], rules: Mapping, bounds, pairs: list) -> str:
    """A hash of everything a resolution depends on: the rule, each cache (its rows are the removals'
    places), each sample rule, the length buckets (which documents are candidates) and the near pairs."""
    key = {"format": RESOLUTION_FORMAT, **rule, "bounds": list(bounds), "pairs": pairs,
           "caches": {n: [c.directory, c.manifest["fingerprint"], rules[n].to_dict() if rules.get(n) else None]
                      for n, c in caches.items()}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()


class _Places:
    """A place numbers every document of every part in order (source, part, row): 8 bytes, not 10."""

    def __init__(self):
        self.bases: list[int] = []  # per global part: its first place
        self.first_part: list[int] = []  # per source: its first global part
        self.total = 0

    def add_source(self) -> None:
        self.first_part.append(len(self.bases))

    def add_part(self, documents: int) -> int:
        self.bases.append(self.total)
        self.total += documents
        return self.bases[-1]

    def of(self, source: int, part: int, row: int) -> int:
        return self.bases[self.first_part[source] + part] + row

    def decode(self, place: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, part, row) of places. A part's base is the last base not above its places (an empty
        part's base equals the next one's)."""
        bases, first = np.asarray(self.bases, np.uint64), np.asarray(self.first_part, np.int64)
        g = np.searchsorted(bases, place, side="right") - 1
        src = np.searchsorted(first, g, side="right") - 1
        return src.astype(np.uint16), (g - first[src]).astype(np.uint32), (place - bases[g]).astype(np.uint32)

    def part_index(self, source: np.ndarray, part: np.ndarray) -> np.ndarray:
        return np.asarray(self.first_part, np.int64)[source.astype(np.int64)] + part.astype(np.int64)


class _Resolution:
    """One resolution: candidates partitioned by key, each partition resolved, removals written by part."""

    def __init__(self, rule: dict, caches: Mapping[str, TokenCache], rules: Mapping, bounds):
        self.rule, self.caches, self.rules, self.bounds = rule, caches, rules, tuple(bounds)
        self.names = tuple(rule["sources"])
        self.places = _Places()
        documents = sum(int(c.stats["documents"]) for c in caches.values())
        target = PARTITION_BYTES or memory_budget() // 8
        # At most MAX_PARTITIONS files a flush appends to (past that, partitions outgrow the target).
        key_partitions = min(partitions_for(documents, _CANDIDATE.itemsize, target), MAX_PARTITIONS)
        self.key_bits = key_partitions.bit_length() - 1
        self.out_partitions = min(partitions_for(documents, REMOVAL.itemsize, target), MAX_PARTITIONS)

    def run(self, folder: str, pairs: list) -> dict:
        with Spill(_CANDIDATE, 1 << self.key_bits) as candidates:
            before = self._candidates(candidates)
            parts = max(1, len(self.places.bases))
            near = np.array(sorted(self.places.of(self.names.index(s), p, r) for pair in pairs for s, p, r in pair),
                            np.uint64)
            with Spill(REMOVAL, min(parts, self.out_partitions)) as removals:
                held = []  # the groups a near pair touches: resolved together, at the end
                for _, records in candidates.partitions():
                    records, touched = _held_back(records, near, self.rule["exact"])
                    held.append(touched)
                    if self.rule["exact"]:
                        self._route(removals, self._resolve(records))
                if len(near):
                    self._route(removals, self._resolve(np.concatenate(held or [np.empty(0, _CANDIDATE)]), pairs))
                index = self._write(folder, removals)
                spilled = candidates.spilled + removals.spilled
        return {**index, **self.rule, "before": before, "spilled": spilled}

    def _candidates(self, spill: Spill) -> dict:
        """Every candidate into ``spill``, partitioned by its key's leading bits; what each source offers."""
        before = {}
        shift = np.uint64(64 - self.key_bits)
        for name in self.names:
            cache, docs, tokens = self.caches[name], 0, 0
            self.places.add_source()
            for part in range(len(cache.parts)):
                table = cache.doc_table(part, columns=DOC_COLUMNS + _KEY_COLUMNS)  # one read of the table
                if table.schema.names[-2:] != _KEY_COLUMNS:
                    raise FormatError(f"{cache.directory}: its document tables hold no content keys (a cache from "
                                      "before cache version 4); delete it and run again.")
                n, bucket, h = doc_buckets(cache, part, self.bounds, self.rules.get(name), table)
                base = self.places.add_part(len(n))
                rows = np.flatnonzero(bucket <= len(self.bounds))  # the candidates: what a sample rule reads
                docs, tokens = docs + len(rows), tokens + int(n[rows].sum())
                rec = np.empty(len(rows), _CANDIDATE)
                rec["hi"] = table.column(_KEY_COLUMNS[0]).to_numpy()[rows]
                rec["lo"] = table.column(_KEY_COLUMNS[1]).to_numpy()[rows]
                rec["hash"], rec["n"], rec["place"] = h[rows], n[rows], np.uint64(base) + rows.astype(np.uint64)
                spill.add(rec["hi"] >> shift if self.key_bits else np.zeros(len(rec), np.int64), rec)
            before[name] = {"documents": docs, "tokens": tokens}
        return before

    def _resolve(self, records: np.ndarray, pairs: list | None = None) -> np.ndarray:
        """The removal records of ``records`` (and the near ``pairs`` among them)."""
        if not pairs:  # exact only: the records whose key is seen once take no part (most of them)
            records = records[_repeated(records)]
        src, part, row = self.places.decode(records["place"])
        a = {"src": src, "part": part, "row": row, "hash": records["hash"], "n": records["n"],
             "hi": records["hi"], "lo": records["lo"]}
        index = None
        if pairs:
            order = np.argsort(records["place"])
            at = np.array([[self.places.of(self.names.index(s), p, r) for s, p, r in pair] for pair in pairs],
                          np.uint64)
            found = np.searchsorted(records["place"][order], at).clip(0, max(len(order) - 1, 0))
            if not len(order) or (records["place"][order][found] != at).any():
                raise RuntimeError("a near pair names a document that is not a candidate (a bug)")
            index = order[found]
        got = _resolve(a, self.names, self.rule["priority"], self.rule["exact"], index)
        out = np.empty(len(got["kind"]), REMOVAL)
        for k in REMOVAL.names:
            out[k] = got[k]
        return out

    def _route(self, spill: Spill, removals: np.ndarray) -> None:
        """Removals into the output partitions, by their cache part (a contiguous range of parts each)."""
        g = self.places.part_index(removals["removed_source"], removals["removed_part"])
        spill.add(g * spill.count // max(1, len(self.places.bases)), removals)

    def _write(self, folder: str, spill: Spill) -> dict:
        """Each output partition, sorted, as a records file; the index's counts, parts and digest."""
        s = len(self.names)
        counts, pairs = np.zeros((s, len(KINDS), 2), np.int64), np.zeros((s, s, len(KINDS), 2), np.int64)
        where: dict[str, dict[int, list[int]]] = {n: {} for n in self.names}
        digest = hashlib.sha256(json.dumps(self.rule, sort_keys=True).encode())
        files = 0
        for _, r in spill.partitions():
            r = r[np.lexsort((r["removed_row"], r["removed_part"], r["removed_source"]))]
            data = r.tobytes()
            with atomic_writer(records_path(folder, files), "wb") as f:
                f.write(data)
            digest.update(data)
            del data
            rs, rk, kind = (r[k].astype(np.int64) for k in ("removed_source", "kept_source", "kind"))
            for j, v in enumerate((np.ones(len(r), np.int64), r["n_tokens"])):
                np.add.at(counts, (rs, kind, j), v)
                np.add.at(pairs, (rk, rs, kind, j), v)
            for a, b in _part_runs(r):
                where[self.names[r["removed_source"][a]]][int(r["removed_part"][a])] = [files, a, b - a]
            files += 1
        return {"files": files, "key_partitions": 1 << self.key_bits, "digest": digest.hexdigest(),
                "counts": counts.tolist(), "pairs": pairs.tolist(), "parts": where,
                "removed": {n: int(counts[i, :, 0].sum()) for i, n in enumerate(self.names)}}


def _repeated(records: np.ndarray) -> np.ndarray:
    """A mask of the records whose content key another record also has (~26 bytes a record at the peak)."""
    order = np.lexsort((records["lo"], records["hi"]))
    hi, lo = records["hi"][order], records["lo"][order]
    same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    del hi, lo
    out = np.zeros(len(records), bool)
    out[order[1:][same]] = True
    out[order[:-1][same]] = True
    return out


def _held_back(records: np.ndarray, near: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the records resolved in their partition, those held back): a document in a near pair, with its
    exact copies, is resolved with every other near pair's (its cluster may reach other partitions)."""
    touched = np.isin(records["place"], near) if len(near) else np.zeros(len(records), bool)
    if not touched.any():
        return records, np.empty(0, records.dtype)  # not records[:0]: a view would keep the partition alive
    if exact:
        keys = set(zip(records["hi"][touched].tolist(), records["lo"][touched].tolist()))
        maybe = np.flatnonzero(np.isin(records["hi"], records["hi"][touched]))
        touched[[i for i in maybe.tolist() if (int(records["hi"][i]), int(records["lo"][i])) in keys]] = True
    return records[~touched], records[touched]


def _resolve(a: dict, names: tuple[str, ...], priority, exact: bool = True, near: np.ndarray | None = None) -> dict:
    """The removed documents and their kept ones, sorted by the removed one's (source, part, row).
    ``exact``: join equal content keys; ``near``: index pairs of near duplicates."""
    hi, lo = a["hi"].astype(np.uint64, copy=False), a["lo"].astype(np.uint64, copy=False)
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
        return {k: np.empty(0, REMOVAL[k]) for k in REMOVAL.names}
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


def deduplicated(cfg: MixtureConfig, caches: Mapping[str, TokenCache], rules: Mapping, out: str,
                 near: list | None = None) -> tuple[dict[str, TokenCache], Dedup | None]:
    """``caches`` without the documents dedup removes (as they are, when it is off), and the resolution."""
    dedup = resolve_duplicates(cfg, caches, rules, out, near)
    return (dedup.apply(caches) if dedup else dict(caches)), dedup
