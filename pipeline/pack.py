"""Shuffle and pack: route every selected copy to an output shard, then write shards of samples.

Each copy of a document has a placement key (``hashing.decision_keys(..., PLACE, copy)``): its high
bits pick the shard, the whole key orders the shard. A shard is the concatenation of its copies'
tokens (each ends with EOS) in key order. Layout ``samples`` cuts it into entries of exactly
``seq_len + 1`` tokens; the tail (fewer than ``seq_len + 1`` tokens) is dropped and reported. Layout
``documents`` writes each copy as one entry, in the same order, and drops nothing: the trainer packs
(Megatron's GPTDataset concatenates a shard's entries and cuts its own windows).

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
import dataclasses
import hashlib
import io
from typing import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from .cache import TokenCache
from .hashing import PLACE, decision_keys
from .lifetime import freeze_worker_state
from .mmidx import MMIDXWriter
from .sampling import SampleRule
from .select import BucketSelection, copies_for, doc_arrays
from . import storage
from .storage import atomic_writer, read_json, write_json

__all__ = ["PackShards", "Packing", "REF_DTYPE", "PROVENANCE_DIR", "PROVENANCE_DTYPE", "shard_name", "shard_names", "pack_stream",
           "write_documents", "write_provenance"]

REF_DTYPE = np.dtype([("key", "<u8"), ("source", "<u2"), ("part", "<u4"), ("row", "<u4"), ("n", "<u4")])
# A shard's copies in stream order, without the placement key (the order already says it).
PROVENANCE_DIR = "_provenance"
PROVENANCE_DTYPE = np.dtype([("source", "<u2"), ("part", "<u4"), ("row", "<u4"), ("n", "<u4")])


def shard_name(mixture: str, index: int, count: int) -> str:
    return f"{mixture}-{index:05d}-of-{count:05d}"


def shard_names(mixture: str, count: int) -> list[str]:
    return [shard_name(mixture, i, count) for i in range(count)]


def shard_of(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard index from a key's top 32 bits: uniform, and independent of its position bits' order."""
    return ((keys >> np.uint64(32)) * np.uint64(num_shards)) >> np.uint64(32)


@dataclasses.dataclass(frozen=True)
class Packing:
    """What the pack stage writes: the selected documents of each source's cache, and where.

    Made by the driver (``mixture.plan_packing``) or, when one pipeline tokenizes and packs, by
    the pipeline's plan step; the pack stage reads it as a side input.
    """

    mixture: str
    sources: tuple[str, ...]  # in the plan's order; the shards' ``source`` indices refer to it
    caches: tuple[str, ...]  # each source's cache directory
    parts: tuple[int, ...]  # each cache's part count
    bounds: tuple[int, ...]  # length-bucket bounds
    selections: tuple[tuple[BucketSelection, ...], ...]
    rules: tuple[SampleRule | None, ...]  # sample rules (sampling.py), None: the whole source
    seed: int
    num_shards: int
    seq_len: int
    dtype: str  # token dtype name
    out_dir: str
    plan_hash: str
    layout: str = "samples"  # config.LAYOUTS

    def work(self) -> list[tuple[int, int]]:
        """(source index, cache part) of every cache part."""
        return [(s, p) for s in range(len(self.sources)) for p in range(self.parts[s])]

    def shard_names(self) -> list[str]:
        return shard_names(self.mixture, self.num_shards)

    @property
    def selected_tokens(self) -> int:
        """What the shards will hold, tails included."""
        return sum(s.selected_tokens for sel in self.selections for s in sel)


class _RouteCopiesFn(beam.DoFn):
    """One cache part -> (shard, references) for every copy its documents contribute."""

    def __init__(self):
        self._opened: tuple[str, list[TokenCache]] = ("", [])

    def process(self, element: tuple[int, int], packing: Packing):
        if self._opened[0] != packing.plan_hash:  # each cache.json read once per worker
            self._opened = (packing.plan_hash, [TokenCache(d) for d in packing.caches])
        src, part = element
        name, seed = packing.sources[src], packing.seed
        cache = self._opened[1][src]
        n, bucket, h, keys = doc_arrays(cache, part, packing.bounds, seed, name, packing.rules[src])
        copies = copies_for(bucket, keys, packing.selections[src])
        rows = np.arange(len(n), dtype=np.uint32)
        out: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        for k in range(int(copies.max(initial=0))):
            take = copies > k
            refs = np.empty(int(take.sum()), dtype=REF_DTYPE)
            refs["key"] = decision_keys(h[take], seed, name, PLACE, k)
            refs["source"], refs["part"], refs["row"], refs["n"] = src, part, rows[take], n[take]
            shards = shard_of(refs["key"], packing.num_shards)
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


def write_documents(pieces, writer: MMIDXWriter) -> int:
    """Write each token array as one entry (a document copy, EOS included); no tail: return 0."""
    for tokens in pieces:
        writer.add(tokens)
    return 0


def _emit(pending, width, writer):
    buf = np.concatenate(pending) if len(pending) > 1 else pending[0] if pending else np.empty(0, np.int64)
    whole = len(buf) // width
    for i in range(whole):
        writer.add(buf[i * width : (i + 1) * width])
    rest = buf[whole * width :]
    return ([rest] if len(rest) else []), len(rest)


class _WriteShardFn(beam.DoFn):
    """Sort a shard's references by key, stream their tokens, cut samples (or not), write the shard."""

    def setup(self):
        freeze_worker_state()  # as the tokenize step does: a pack-only job's workers exit sooner too

    def process(self, element, packing: Packing):
        shard, chunks = element
        out, plan_hash = packing.out_dir, packing.plan_hash
        name = shard_name(packing.mixture, shard, packing.num_shards)
        sidecar = storage.join(out, "_shards", name + ".json")
        if storage.exists(sidecar) and read_json(sidecar).get("plan_hash") == plan_hash and all(
            storage.exists(storage.join(out, name + ext)) for ext in (".bin", ".idx")
        ) and storage.exists(storage.join(out, PROVENANCE_DIR, name + ".refs.npy")):
            yield read_json(sidecar)  # finished by an earlier run of the same plan
            return
        refs = np.concatenate(list(chunks)) if chunks else np.empty(0, REF_DTYPE)
        refs = refs[np.lexsort((refs["row"], refs["part"], refs["source"], refs["key"]))]
        caches = {s: TokenCache(packing.caches[s]) for s in np.unique(refs["source"]).tolist()}
        storage.make_dirs(out)
        with MMIDXWriter(storage.join(out, name), np.dtype(packing.dtype)) as writer:
            if packing.layout == "documents":
                tail = write_documents(_pieces(refs, caches), writer)
            else:
                tail = pack_stream(_pieces(refs, caches), packing.seq_len, writer)
        info = writer.close()
        for c in caches.values():
            c.close()
        per_source = _per_source(refs, tail, packing.sources)
        provenance = write_provenance(out, PROVENANCE_DIR + "/" + name + ".refs.npy", refs, packing.sources)
        record = {
            "name": name,
            "index": shard,
            "plan_hash": plan_hash,
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
    """One ``Packing`` -> shard records (one per output shard, after it is written).

        records = p | "PackShards[stage1]" >> PackShards(packing)        # the plan known now
        records = plans | "PackShards[stage1]" >> PackShards()            # a PCollection of one Packing

    Given the packing, its work items (cache parts) and shards are created as such, so a runner that
    partitions a stage by its input (Dask) spreads routing and writing over its workers; from a
    PCollection they are listed by one step, then reshuffled. Shards do not depend on how the work is
    split: a shard's references are sorted by (key, source, part, row) before it is written.
    """

    def __init__(self, packing: Packing | None = None):
        super().__init__()
        self._packing = packing

    def expand(self, pvalue):
        if self._packing is None:
            packing = pvalue
            parts = (packing | "ListCacheParts" >> beam.FlatMap(Packing.work)
                     | "SpreadParts" >> beam.Reshuffle())
            every_shard = packing | "ListShards" >> beam.FlatMap(_every_shard)
        else:
            packing = pvalue | "Plan" >> beam.Create([self._packing])
            parts = pvalue | "ListCacheParts" >> beam.Create(self._packing.work())
            every_shard = pvalue | "ListShards" >> beam.Create(_every_shard(self._packing))
        plan = beam.pvalue.AsSingleton(packing)
        routed = parts | "RouteCopies" >> beam.ParDo(_RouteCopiesFn(), plan)
        # Every shard exists even if no copy lands in it (tiny mixtures, many shards).
        return (
            (routed, every_shard)
            | "AllShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(), plan)
        )


def _every_shard(packing: Packing) -> list[tuple[int, np.ndarray]]:
    return [(s, np.empty(0, REF_DTYPE)) for s in range(packing.num_shards)]
