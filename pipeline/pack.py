"""Shuffle and pack: route every selected copy to an output shard, then write shards of samples.

Each copy of a document has a placement key (``hashing.decision_keys(..., PLACE, copy)``): its high
bits pick the shard, the whole key orders the shard. A shard is the concatenation of its copies'
tokens (each ends with EOS) in key order. Layout ``samples`` cuts it into entries of exactly
``seq_len + 1`` tokens; the tail (fewer than ``seq_len + 1`` tokens) is dropped and reported. Layout
``documents`` writes each copy as one entry, in the same order, and drops nothing: the trainer packs
(Megatron's GPTDataset concatenates a shard's entries and cuts its own windows).

What crosses the shuffle is where a shard's references (24 bytes a copy) sit in a cache part's
file of references under ``out/_refs`` (``layout.refs_path``), never token arrays nor the references
themselves: the local runner holds everything it groups in the driver's memory (``Routed``). For a
cache on an object store the same file holds, after the references, each shard's documents of the
part, read from the cache once by the routing step. The folder is removed once every shard is written.

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
import mmap
import tempfile
from typing import Iterator, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from . import storage
from .cache import TokenCache
from .errors import FormatError
from .hashing import PLACE, decision_keys
from .layout import (
    REFS_DIR,
    finished_shard,
    provenance_rel,
    refs_dir,
    refs_path,
    shard_name,
    shard_names,
    shard_prefix,
    sidecar_path,
)
from .lifetime import freeze_worker_state
from .mix.select import BucketSelection, copies_for, doc_arrays
from .mmidx import MMIDXReader, MMIDXWriter
from .sampling import SampleRule
from .storage import atomic_writer, write_json

# PROVENANCE_DIR, REFS_DIR, shard_name(s): layout.py's, still imported from here by some callers.
__all__ = ["PackShards", "Packing", "REF_DTYPE", "PROVENANCE_DTYPE", "pack_stream", "write_documents",
           "write_provenance"]

REF_DTYPE = np.dtype([("key", "<u8"), ("source", "<u2"), ("part", "<u4"), ("row", "<u4"), ("n", "<u4")])
# A shard's copies in stream order, without the placement key (the order already says it).
PROVENANCE_DTYPE = np.dtype([("source", "<u2"), ("part", "<u4"), ("row", "<u4"), ("n", "<u4")])


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
    removed: tuple = ()  # per source: the documents dedup removed (dedup.removed.Removed) or None; () for none

    def cache(self, src: int) -> TokenCache:
        """Source ``src``'s cache, opened and seen without the documents dedup removed."""
        return TokenCache(self.caches[src]).without(self.removed[src] if self.removed else None)

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
            self._opened = (packing.plan_hash, [packing.cache(s) for s in range(len(packing.caches))])
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
        by_shard = {s: np.concatenate(chunks) for s, chunks in sorted(out.items())}
        yield from _save_refs(packing, src, part, by_shard, cache.prefix(part))


class Routed(NamedTuple):
    """What the shuffle carries for one (cache part, shard): where the shard's references sit in the
    part's file under ``out/_refs``, and, for a cache on an object store, where the tokens of the
    shard's distinct documents of that part sit after them (bytes), else None."""

    path: str
    first: int  # references: first and count, in REF_DTYPE entries
    count: int
    tokens: tuple[int, int] | None = None  # (byte offset, byte count) in the same file


def _save_refs(packing: Packing, src: int, part: int, by_shard: dict[int, np.ndarray], prefix: str):
    """Write one cache part's references, shard after shard, to one file beside the output; yield
    (shard, Routed) for the shuffle to carry. The local runner holds everything it groups in the
    driver: references grew it with the input.

    A cache on an object store: the same file then holds, after the references and shard after
    shard, the tokens of each shard's distinct documents of this part (``_bundle``), read here once.
    A writer reading the part itself instead read it (nearly) whole for every shard: bytes grew with
    shards x caches. Local caches are gathered by the writers straight from their mappings."""
    by_shard = {s: refs for s, refs in by_shard.items() if len(refs)}
    if not by_shard:  # a part none of whose documents is selected: no file (an empty object is no upload on S3)
        return
    path = refs_path(packing.out_dir, src, part)
    with atomic_writer(path, "wb") as f:
        for refs in by_shard.values():
            f.write(refs.tobytes())
        sizes = _bundle(prefix, by_shard, np.dtype(packing.dtype), f) if storage.is_remote(prefix) else None
    first, at = 0, sum(len(refs) for refs in by_shard.values()) * REF_DTYPE.itemsize
    for shard, refs in by_shard.items():
        tokens = None
        if sizes is not None:
            tokens, at = (at, sizes[shard]), at + sizes[shard]
        yield shard, Routed(path, first, len(refs), tokens)
        first += len(refs)


def _bundle(prefix: str, by_shard: dict[int, np.ndarray], dtype: np.dtype, f) -> dict[int, int]:
    """Write each shard's distinct documents of one (remote) cache part, in row order, to ``f``;
    return each shard's byte count. The part is read once, in runs (``_copy_runs``), to a local file."""
    rows_of = {s: np.unique(refs["row"]).astype(np.int64) for s, refs in by_shard.items()}
    rows = np.unique(np.concatenate(list(rows_of.values())))
    sizes = {}
    with MMIDXReader(prefix) as reader, tempfile.TemporaryFile(prefix="mixprep-route-") as spill:
        _check_dtype(reader, dtype)
        _copy_runs(reader, rows, spill)
        spill.flush()
        lengths = reader.sequence_lengths[rows].astype(np.int64)
        with mmap.mmap(spill.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = np.frombuffer(mapped, dtype)
            starts = np.cumsum(lengths) - lengths
            for shard, wanted in rows_of.items():
                at = np.searchsorted(rows, wanted)
                sizes[shard] = int(lengths[at].sum()) * dtype.itemsize
                for chunk in _by_tokens(at, lengths):
                    f.write(_take(data, starts[chunk], lengths[chunk]).tobytes())
            del data
    return sizes


def _by_tokens(at: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """``at`` (indices into ``lengths``) cut into runs of about ``_RELEASE_EVERY`` tokens."""
    ends = np.cumsum(lengths[at])
    if not len(ends):
        return []
    return np.split(at, np.searchsorted(ends, np.arange(_RELEASE_EVERY, int(ends[-1]), _RELEASE_EVERY), "right"))


def _take(tokens: np.ndarray, begin: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``tokens[begin[i]:begin[i] + lengths[i]]`` for every i, back to back, in one gather."""
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return tokens[np.repeat(begin, lengths) + within]


def _load_refs(chunk) -> np.ndarray:
    """A shard's references from one part's file (one ranged read), or _every_shard's empty array."""
    if isinstance(chunk, np.ndarray):
        return chunk
    size = chunk.count * REF_DTYPE.itemsize
    return np.frombuffer(b"".join(_range(chunk.path, chunk.first * REF_DTYPE.itemsize, size)), REF_DTYPE)


def _check_dtype(reader: MMIDXReader, dtype: np.dtype) -> None:
    if reader.dtype != dtype:
        raise FormatError(f"{reader.prefix}: expected {dtype.name} tokens (the mixture's), found {reader.dtype.name}")


def _drop_refs(_, packing: Packing) -> None:
    storage.delete_tree(refs_dir(packing.out_dir))


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
        if (done := finished_shard(out, name, plan_hash)) is not None:
            yield done  # finished by an earlier run of the same plan
            return
        loaded = [(c, _load_refs(c)) for c in chunks]
        refs = np.concatenate([r for _, r in loaded]) if loaded else np.empty(0, REF_DTYPE)
        refs = refs[np.lexsort((refs["row"], refs["part"], refs["source"], refs["key"]))]
        # (source, part) -> where the routing step put this shard's tokens of a remote cache part
        bundles = {(int(r["source"][0]), int(r["part"][0])): c for c, r in loaded
                   if isinstance(c, Routed) and c.tokens is not None and len(r)}
        caches = {s: TokenCache(packing.caches[s]) for s in np.unique(refs["source"]).tolist()}
        storage.make_dirs(out)
        dtype = np.dtype(packing.dtype)
        pieces = _pieces(refs, caches, dtype, bundles)
        with MMIDXWriter(shard_prefix(out, name), dtype) as writer:
            if packing.layout == "documents":
                tail = write_documents(pieces, writer)
            else:
                tail = pack_stream(pieces, packing.seq_len, writer)
        info = writer.close()
        for c in caches.values():
            c.close()
        per_source = _per_source(refs, tail, packing.sources)
        provenance = write_provenance(out, provenance_rel(name), refs, packing.sources)
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
        write_json(sidecar_path(out, name), record)
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
# A gap between two needed documents of a part is read through when it costs less than a new request:
# an object store's ~30 ms to first byte is ~3 MB at ~100 MB/s.
_SKIP_BYTES = 4 << 20
_SPAN_BYTES = 8 << 20  # one read's target size: a read holds < 2 x this + the largest document


def _pieces(refs: np.ndarray, caches: dict, dtype: np.dtype, bundles: dict | None = None) -> Iterator[np.ndarray]:
    """The referenced documents' tokens, in order.

    A shard's copies are scattered over every cache part, in key order. Reading them in that order
    is a request per copy on an object store; instead every part's needed documents are copied once,
    in file order, into a local spill file (from the local cache's mapping, or for a remote cache the
    one range of the part's routed file that holds them: ``bundles``), and the stream is cut from it.
    """
    with tempfile.TemporaryFile(prefix="mixprep-pack-") as spill:
        offsets = _gather(refs, caches, dtype, spill, bundles or {})
        if not len(refs):
            return
        spill.flush()
        with mmap.mmap(spill.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield from _cut(refs["n"], offsets, mapped, dtype)


def _cut(lengths: np.ndarray, offsets: np.ndarray, mapped: mmap.mmap, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Copies of ``mapped``'s tokens in stream order; the pages read are released every ~1M tokens, so
    the writer's resident memory does not grow with the shard."""
    data = np.frombuffer(mapped, dtype)
    read = 0
    for off, n in zip(offsets.tolist(), lengths.tolist()):
        yield data[off:off + n].copy()  # a copy: the mapping closes when the shard is written
        read += n
        if read >= _RELEASE_EVERY and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)
            read = 0
    del data


def _gather(refs: np.ndarray, caches: dict, dtype: np.dtype, spill, bundles: dict) -> np.ndarray:
    """Write every distinct document ``refs`` name to ``spill``, part by part in file order; return
    each reference's token offset in it."""
    order = np.lexsort((refs["row"], refs["part"], refs["source"]))
    keyed = refs[order]
    new = np.ones(len(keyed), dtype=bool)
    new[1:] = (keyed["source"][1:] != keyed["source"][:-1]) | (keyed["part"][1:] != keyed["part"][:-1]) \
        | (keyed["row"][1:] != keyed["row"][:-1])
    docs = keyed[new]  # distinct documents in file order: a copy may repeat in a shard
    starts = np.zeros(len(docs), dtype=np.int64)
    parts = np.flatnonzero(np.r_[True, (docs["source"][1:] != docs["source"][:-1])
                                 | (docs["part"][1:] != docs["part"][:-1])]) if len(docs) else []
    at = 0
    for i, j in zip(parts, [*parts[1:], len(docs)]):
        lengths = docs["n"][i:j].astype(np.int64)
        starts[i:j] = at + np.cumsum(lengths) - lengths
        where = (int(docs["source"][i]), int(docs["part"][i]))
        if where in bundles:
            _copy_bundle(bundles[where], int(lengths.sum()) * dtype.itemsize, spill)
        else:
            # Open one part at a time: a writer touches every part, and each open index is resident.
            # Unchecked: every writer checking every part's whole index made the stage's work grow with
            # shards x documents (the writer's reads stay bounds-checked).
            with MMIDXReader(caches[where[0]].prefix(where[1]), check=False) as reader:
                _check_dtype(reader, dtype)
                rows = docs["row"][i:j].astype(np.int64)
                if not np.array_equal(reader.sequence_lengths[rows], lengths):
                    raise FormatError(f"{reader.prefix}: document lengths differ from the cache's document "
                                      "table; rebuild the cache (delete its folder and run again)")
                if storage.is_remote(reader.prefix):  # no bundle: a cache not on a store when routed
                    _copy_runs(reader, rows, spill)
                else:
                    _copy_rows(reader, rows, spill)
        at = int(starts[j - 1]) + int(docs["n"][j - 1])
    offsets = np.empty(len(refs), dtype=np.int64)
    offsets[order] = starts[np.cumsum(new) - 1]
    return offsets


def _copy_runs(reader, rows: np.ndarray, spill) -> None:
    """Object store: ``rows``' tokens read in runs (``_reads``), gaps read through and dropped."""
    for first, last in _reads(reader.sequence_pointers, reader.sequence_lengths, rows, reader.dtype.itemsize):
        span = reader.span(first, last)
        wanted = rows[np.searchsorted(rows, first):np.searchsorted(rows, last, "right")]
        spill.write(span[_span_mask(reader, first, len(span), wanted)].tobytes())


def _copy_rows(reader, rows: np.ndarray, spill) -> None:
    """Local disk: ``rows``' tokens gathered from the mapping, ~1M tokens at a time. Reading gaps
    through would read every part whole for every shard: time grows with shards x input."""
    ends = np.cumsum(reader.sequence_lengths[rows].astype(np.int64))
    cuts = np.searchsorted(ends, np.arange(_RELEASE_EVERY, int(ends[-1]), _RELEASE_EVERY), "right")
    for chunk in np.split(rows, cuts):
        spill.write(reader.take(chunk).tobytes())


def _copy_bundle(routed: Routed, expected: int, spill) -> None:
    """A remote part's documents for this shard: the one range of its routed file the routing step
    wrote them to (``_bundle``), copied ~8 MiB at a time."""
    offset, size = routed.tokens
    if size != expected:
        raise FormatError(f"{routed.path}: {size} token bytes routed, the shard's references need {expected}; "
                          f"delete the output folder's {REFS_DIR} and run again")
    for data in _range(routed.path, offset, size):
        spill.write(data)


def _range(path: str, offset: int, size: int) -> Iterator[bytes]:
    """One range of a routed file; a file cut short (removed or rewritten meanwhile) stops the run."""
    try:
        yield from storage.read_range(path, offset, size, _SPAN_BYTES)
    except EOFError as e:
        raise FormatError(f"{e}; delete the output folder's {REFS_DIR} and run again") from e


def _span_mask(reader, first: int, span_len: int, wanted: np.ndarray) -> np.ndarray:
    """Which tokens of ``reader.span(first, ...)`` belong to the ``wanted`` rows (3 bytes a token of
    the span: int64 indices of the wanted tokens took 8 a token and more)."""
    itemsize = reader.dtype.itemsize
    begin = (reader.sequence_pointers[wanted] - reader.sequence_pointers[first]) // itemsize
    edges = np.zeros(span_len + 1, dtype=np.int8)
    np.add.at(edges, begin, 1)  # a wanted row may start where another ends: add, not assign
    np.add.at(edges, begin + reader.sequence_lengths[wanted], -1)
    return np.cumsum(edges[:-1], dtype=np.int8) > 0


def _reads(pointers: np.ndarray, lengths: np.ndarray, rows: np.ndarray, itemsize: int) -> list[tuple[int, int]]:
    """The reads (first row, last row) that cover ``rows`` (sorted, distinct) of one token file.

    Rows whose gaps are at most ``_SKIP_BYTES`` form one run, read front to back: each read starts
    at the row after the previous read's last, so on an object store a run is one request. A run is
    cut into reads of about ``_SPAN_BYTES``.

    >>> _reads(np.arange(0, 40, 4), np.full(10, 2), np.array([0, 1, 9]), 1)
    [(0, 9)]
    """
    if not len(rows):
        return []
    start = pointers[rows].astype(np.int64)
    end = start + lengths[rows].astype(np.int64) * itemsize
    run = np.cumsum(np.r_[0, start[1:] - end[:-1] > _SKIP_BYTES])
    run_start = start[np.r_[0, np.flatnonzero(np.diff(run)) + 1]][run]
    chunk = (end - run_start) // _SPAN_BYTES
    last = np.flatnonzero(np.r_[(run[1:] != run[:-1]) | (chunk[1:] != chunk[:-1]), True])
    reads = []
    for n, k in enumerate(last.tolist()):
        if n == 0 or run[k] != run[last[n - 1]]:
            first = int(rows[0 if n == 0 else last[n - 1] + 1])  # a run's first row
        else:
            first = int(rows[last[n - 1]]) + 1  # where the previous read ended
        reads.append((first, int(rows[k])))
    return reads


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
        records = (
            (routed, every_shard)
            | "AllShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(), plan)
        )
        # Once every shard is written (a writer retried after this would find its shard done).
        _ = (records | "CountShards" >> beam.combiners.Count.Globally()
             | "DropReferences" >> beam.Map(_drop_refs, plan))
        return records


def _every_shard(packing: Packing) -> list[tuple[int, np.ndarray]]:
    return [(s, np.empty(0, REF_DTYPE)) for s in range(packing.num_shards)]
