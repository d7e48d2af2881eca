"""Shuffle and pack: route every selected copy to an output shard, then write shards of samples.

Each copy of a document has a placement key (``hashing.decision_keys(..., PLACE, copy)``): its high
bits pick the shard, the whole key orders the shard. A shard is the concatenation of its copies'
tokens (each ends with EOS) in key order, cut into entries of exactly ``seq_len + 1`` tokens; the
tail (fewer than ``seq_len + 1`` tokens) is dropped and reported.

What crosses the shuffle is compact numpy arrays of references (24 bytes a copy), one array per
(cache part, shard), never token arrays: the local runner holds grouped data in memory.

Provenance: beside each shard, ``_provenance/NAME.refs.npy`` holds the shard's copies in stream order
(``PROVENANCE_DTYPE``: source index, cache part, row, tokens; 14 bytes a copy). The running sum of
``n`` places every copy in the shard's token stream, so any sample maps back to its documents
(``mixprep inspect``). The shard's sidecar JSON lists the file, its sha256 and the source names the
indices refer to.
"""

from __future__ import annotations

import collections
import hashlib
import io
from typing import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from .cache import TokenCache
from .hashing import PLACE, decision_keys
from .mmidx import MMIDXWriter
from .sampling import SampleRule
from .select import BucketSelection, copies_for, doc_arrays
from . import storage
from .storage import atomic_writer, read_json, write_json

__all__ = ["PackShards", "REF_DTYPE", "PROVENANCE_DIR", "PROVENANCE_DTYPE", "shard_name", "pack_stream",
           "write_provenance"]

REF_DTYPE = np.dtype([("key", "<u8"), ("source", "<u2"), ("part", "<u4"), ("row", "<u4"), ("n", "<u4")])
# A shard's copies in stream order, without the placement key (the order already says it).
PROVENANCE_DIR = "_provenance"
PROVENANCE_DTYPE = np.dtype([("source", "<u2"), ("part", "<u4"), ("row", "<u4"), ("n", "<u4")])


def shard_name(mixture: str, index: int, count: int) -> str:
    return f"{mixture}-{index:05d}-of-{count:05d}"


def shard_of(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard index from a key's top 32 bits: uniform, and independent of its position bits' order."""
    return ((keys >> np.uint64(32)) * np.uint64(num_shards)) >> np.uint64(32)


class _RouteCopiesFn(beam.DoFn):
    """One cache part -> (shard, references) for every copy its documents contribute."""

    def __init__(self, sources, caches, bounds, selections, seed, num_shards, rules):
        self._sources, self._caches, self._bounds = sources, caches, bounds
        self._selections, self._seed, self._m, self._rules = selections, seed, num_shards, rules
        self._opened: list[TokenCache] = []

    def setup(self):
        self._opened = [TokenCache(d) for d in self._caches]  # each cache.json read once per worker

    def process(self, element: tuple[int, int]):
        src, part = element
        name = self._sources[src]
        cache = self._opened[src]
        n, bucket, h, keys = doc_arrays(cache, part, self._bounds, self._seed, name, self._rules[src])
        copies = copies_for(bucket, keys, self._selections[src])
        rows = np.arange(len(n), dtype=np.uint32)
        out: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        for k in range(int(copies.max(initial=0))):
            take = copies > k
            refs = np.empty(int(take.sum()), dtype=REF_DTYPE)
            refs["key"] = decision_keys(h[take], self._seed, name, PLACE, k)
            refs["source"], refs["part"], refs["row"], refs["n"] = src, part, rows[take], n[take]
            shards = shard_of(refs["key"], self._m)
            for s in np.unique(shards):
                out[int(s)].append(refs[shards == s])
        Metrics.counter(f"mix:{name}", "copies").inc(int(copies.sum()))
        for s, chunks in sorted(out.items()):
            yield s, np.concatenate(chunks)


def pack_stream(pieces, seq_len: int, writer: MMIDXWriter) -> int:
    """Concatenate token arrays and write entries of exactly ``seq_len + 1``; return the tail length."""
    width = seq_len + 1
    pending: list[np.ndarray] = []
    pending_len = 0
    for tokens in pieces:
        pending.append(tokens)
        pending_len += len(tokens)
        if pending_len >= 64 * width:
            pending, pending_len = _emit(pending, width, writer)
    pending, pending_len = _emit(pending, width, writer)
    return pending_len


def _emit(pending, width, writer):
    buf = np.concatenate(pending) if len(pending) > 1 else pending[0] if pending else np.empty(0, np.int64)
    whole = len(buf) // width
    for i in range(whole):
        writer.add(buf[i * width : (i + 1) * width])
    rest = buf[whole * width :]
    return ([rest] if len(rest) else []), len(rest)


class _WriteShardFn(beam.DoFn):
    """Sort a shard's references by key, stream their tokens, cut samples, write the shard."""

    def __init__(self, mixture, sources, caches, num_shards, seq_len, dtype, out_dir, plan_hash):
        self._mixture, self._sources, self._caches = mixture, sources, caches
        self._m, self._seq_len, self._dtype = num_shards, seq_len, dtype
        self._out, self._plan_hash = out_dir, plan_hash

    def process(self, element):
        shard, chunks = element
        name = shard_name(self._mixture, shard, self._m)
        sidecar = storage.join(self._out, "_shards", name + ".json")
        if storage.exists(sidecar) and read_json(sidecar).get("plan_hash") == self._plan_hash and all(
            storage.exists(storage.join(self._out, name + ext)) for ext in (".bin", ".idx")
        ) and storage.exists(storage.join(self._out, PROVENANCE_DIR, name + ".refs.npy")):
            yield read_json(sidecar)  # finished by an earlier run of the same plan
            return
        refs = np.concatenate(list(chunks)) if chunks else np.empty(0, REF_DTYPE)
        refs = refs[np.lexsort((refs["row"], refs["part"], refs["source"], refs["key"]))]
        caches = {s: TokenCache(self._caches[s]) for s in np.unique(refs["source"]).tolist()}
        storage.make_dirs(self._out)
        with MMIDXWriter(storage.join(self._out, name), self._dtype) as writer:
            tail = pack_stream(_pieces(refs, caches), self._seq_len, writer)
        info = writer.close()
        for c in caches.values():
            c.close()
        per_source = _per_source(refs, tail, self._sources)
        provenance = write_provenance(self._out, PROVENANCE_DIR + "/" + name + ".refs.npy", refs, self._sources)
        record = {
            "name": name,
            "index": shard,
            "plan_hash": self._plan_hash,
            "sequences": info.sequences,
            "tokens": info.tokens,
            "tail_tokens": tail,
            "bin_sha256": info.bin_sha256,
            "idx_sha256": info.idx_sha256,
            "bin_bytes": info.bin_bytes,
            "idx_bytes": info.idx_bytes,
            "sources": per_source,
            "provenance": provenance,
        }
        write_json(sidecar, record)
        Metrics.counter("mix", "samples").inc(info.sequences)
        yield record


def write_provenance(out: str, rel: str, refs: np.ndarray, sources: Sequence[str]) -> dict:
    """Write a shard's references (in stream order) to ``out/rel`` as ``PROVENANCE_DTYPE`` .npy, atomically.

    Returns what the shard's sidecar records about it: the file (relative to ``out``), its sha256,
    bytes and copies, and the source names that the ``source`` column indexes.
    """
    table = np.empty(len(refs), dtype=PROVENANCE_DTYPE)
    for field in PROVENANCE_DTYPE.names:
        table[field] = refs[field]
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    data = buf.getvalue()  # 14 bytes a copy: small enough to hash in memory
    with atomic_writer(storage.join(out, rel), "wb") as f:
        f.write(data)
    return {"file": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "copies": len(table), "sources": list(sources)}


def _per_source(refs: np.ndarray, tail: int, sources: Sequence[str]) -> dict:
    """Copies and tokens per source in this shard; the tail is charged to the last copies."""
    out = {}
    n = refs["n"].astype(np.int64)
    tail_by = np.zeros(len(n), dtype=np.int64)
    left, i = tail, len(n) - 1
    while left > 0 and i >= 0:
        tail_by[i] = min(left, n[i])
        left -= tail_by[i]
        i -= 1
    for s in np.unique(refs["source"]).tolist():
        m = refs["source"] == s
        out[sources[s]] = {
            "copies": int(m.sum()),
            "tokens": int(n[m].sum()),
            "tail_tokens": int(tail_by[m].sum()),
        }
    return out


_RELEASE_EVERY = 1 << 20  # tokens read between releases (each page fault maps ~64 KiB around it)


def _pieces(refs: np.ndarray, caches: dict) -> Iterator[np.ndarray]:
    """The referenced documents' tokens, in order. A shard's documents are scattered over every
    cache part: without releasing the pages read, a writer's resident memory grows with the input."""
    read = 0
    for r in refs:
        tokens = caches[r["source"]].tokens(int(r["part"]))[int(r["row"])]
        yield tokens
        read += len(tokens)
        if read >= _RELEASE_EVERY:
            for c in caches.values():
                c.release_pages()
            read = 0


class PackShards(beam.PTransform):
    """Cache parts -> shard records (one per output shard, after the shard is written)."""

    def __init__(self, mixture: str, sources: Sequence[str], caches: Sequence[str], parts: Sequence[int],
                 bounds: Sequence[int], selections: Sequence[Sequence[BucketSelection]], seed: int,
                 num_shards: int, seq_len: int, dtype, out_dir: str, plan_hash: str,
                 rules: Sequence[SampleRule | None] | None = None):
        super().__init__()
        self._work = [(s, p) for s in range(len(sources)) for p in range(parts[s])]
        self._num_shards = num_shards
        rules = list(rules) if rules is not None else [None] * len(sources)  # sample rules (sampling.py)
        self._route = _RouteCopiesFn(list(sources), list(caches), list(bounds), [list(x) for x in selections], seed,
                                     num_shards, rules)
        self._write = _WriteShardFn(mixture, list(sources), list(caches), num_shards, seq_len, np.dtype(dtype), out_dir, plan_hash)

    def expand(self, pbegin):
        routed = (
            pbegin
            | "ListCacheParts" >> beam.Create(self._work, reshuffle=False)  # SpreadParts does it
            | "SpreadParts" >> beam.Reshuffle()
            | "RouteCopies" >> beam.ParDo(self._route)
        )
        # Every shard exists even if no copy lands in it (tiny mixtures, many shards).
        every_shard = pbegin | "ListShards" >> beam.Create([(s, np.empty(0, REF_DTYPE)) for s in range(self._num_shards)])
        return (
            (routed, every_shard)
            | "AllShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(self._write)
        )
