"""Tokenize once, mix many: the per-source token cache.

    CACHE/<source>/<fingerprint>/
      part-00000.bin/.idx        tokens of input file 0, one MMIDIDX entry per document (EOS included)
      part-00000.docs.parquet    row i describes entry i: doc_id, subset, n_tokens, doc_hash, n_chars
      part-00000.rejects.jsonl   records rejected while reading file 0 (only when there are some)
      part-00000.json            the part's summary: file, counts, stats, sha256s (written last)
      cache.json                 the whole cache: fingerprint inputs, tokenizer, totals (written last)
      readers/<run>.json         sampled caches only: a run reading it now (``Readers``)

One input file makes one part, so a cache's bytes do not depend on the runner or the worker count,
and a rerun after a crash keeps every part that was finished. The fingerprint covers the source's
files and sizes, the paths its patterns match that are refused (``sources.files.REFUSALS``), the
reader version, the reading options and the tokenizer's sha256: a cache with the same fingerprint is
reused as it is; any change makes a new one. Each part is a GPT-NeoX / Megatron dataset as it stands.
cache.json's ``accounting`` has every record (read = forwarded + rejected + excluded_subset) and
every file: files_matched = files_read (one part each) + len(files_refused).

A cache may hold a sample of its source (``sampling.SampleRule``, part of the fingerprint): the
documents the rule passes are tokenized, the others are read, counted (``not_tokenized``) and left,
but for a histogram of their sample units and lengths (``unseen`` in the part and cache summaries):
what sizes a top-up (topup.py).
A sampled cache may be built on an earlier sampled cache of the same files whose rule its own rule
covers (a top-up, sampling.py): the documents the earlier rule passed are copied from it, in file
order, not tokenized again. The new cache is the same bytes as one built from scratch. A cache that
holds all of a sample's documents replaces it on disk (``remove_covered_samples``) unless another
run is reading it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions

from .crashpoints import crash_point
from .document import Document, Reject
from .errors import FormatError
from .mmidx import MMIDXReader, MMIDXWriter
from .sources import (READER_VERSION, FileTally, RefusedFile, SourceFile, SourceSpec, count_refused, count_tally,
                      read_documents, refused_files)
from .sources.formats import TEXT_PER_FILE_BYTE, format_of
from . import storage
from .storage import atomic_writer, make_dirs, read_json, write_json
from .hashing import doc_hash
from .lifetime import freeze_worker_state
from .sampling import SampleRule, sample_units
from .tokenizer import ENCODER_VERSION, Encoder, LoadedTokenizer, TokenizerInfo
from .topup import Unseen

log = logging.getLogger("mixprep")

__all__ = ["BuildCache", "BuildCaches", "TokenCache", "cache_fingerprint", "cache_dir", "remove_covered_samples",
           "sampled_caches", "HISTOGRAM_BINS"]

CACHE_VERSION = 3  # 2: n_chars in the document table; sampled caches. 3: file accounting (refused paths)
HISTOGRAM_BINS = 40  # bin k holds documents of [2**k, 2**(k+1)) tokens
_BATCH_CHARS = 1 << 22  # characters per encode call: bounds the tokenizer's transient memory
_TABLE_ROWS = 1 << 16  # doc-table rows per parquet row group
_DOC_TABLE_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("subset", pa.string()), ("n_tokens", pa.int32()), ("doc_hash", pa.uint64()),
     ("n_chars", pa.int64())]
)


def cache_fingerprint(spec: SourceSpec, files: list[SourceFile], tokenizer: LoadedTokenizer,
                      rule: SampleRule | None = None) -> str:
    """sha256 over everything that decides the cache's content."""
    key = {
        "cache_version": CACHE_VERSION,
        "reader_version": READER_VERSION,
        "encoder_version": ENCODER_VERSION,
        "kind": spec.kind,
        "text_field": spec.text_key,
        "include": sorted(spec.include),
        "exclude": sorted(spec.exclude),
        "skip_corrupt_files": spec.skip_corrupt_files,
        "files": [[f.rel, f.size] for f in files],
        "refused": [[r.rel, r.reason] for r in refused_files(files)],  # their accounting is in the cache
        "tokenizer_sha256": tokenizer.sha256,
    }
    if rule is not None:
        key["sample_rule"] = rule.to_dict()
        key["unseen"] = 1  # a sampled cache keeps the histogram of the documents it did not tokenize (topup.py)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_dir(cache_root: str, source: str, fingerprint: str) -> str:
    return storage.join(cache_root, source, fingerprint[:16])


def _part_name(index: int) -> str:
    return f"part-{index:05d}"


class _Stats:
    """Documents, tokens, per-subset totals and a log2 length histogram, merged part by part."""

    def __init__(self):
        self.docs = 0
        self.tokens = 0
        self.subsets: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        self.hist_docs = np.zeros(HISTOGRAM_BINS, np.int64)
        self.hist_tokens = np.zeros(HISTOGRAM_BINS, np.int64)

    def add(self, subset: str, n_tokens: int) -> None:
        self.docs += 1
        self.tokens += n_tokens
        s = self.subsets[subset]
        s[0] += 1
        s[1] += n_tokens
        k = n_tokens.bit_length() - 1
        self.hist_docs[k] += 1
        self.hist_tokens[k] += n_tokens

    def merge(self, d: dict) -> None:
        self.docs += d["documents"]
        self.tokens += d["tokens"]
        for name, s in d["subsets"].items():
            mine = self.subsets[name]
            mine[0] += s["documents"]
            mine[1] += s["tokens"]
        self.hist_docs += np.asarray(d["histogram"]["documents"], np.int64)
        self.hist_tokens += np.asarray(d["histogram"]["tokens"], np.int64)

    def to_dict(self) -> dict:
        return {
            "documents": self.docs,
            "tokens": self.tokens,
            "subsets": {k: {"documents": v[0], "tokens": v[1]} for k, v in sorted(self.subsets.items())},
            "histogram": {
                "bins": "log2: bin k holds documents of [2**k, 2**(k+1)) tokens",
                "documents": self.hist_docs.tolist(),
                "tokens": self.hist_tokens.tolist(),
            },
        }


class _DocTable:
    """Streams (doc_id, subset, n_tokens, doc_hash) rows to parquet in row groups: memory stays bounded."""

    def __init__(self, path: str):
        self._cm = atomic_writer(path, "wb")
        self._writer = pq.ParquetWriter(self._cm.__enter__(), _DOC_TABLE_SCHEMA, compression="zstd")
        self._rows: tuple[list, ...] = ([], [], [], [], [])

    def add(self, doc_id: str, subset: str, n_tokens: int, h: int, n_chars: int) -> None:
        ids, subsets, counts, hashes, chars = self._rows
        ids.append(doc_id)
        subsets.append(subset)
        counts.append(n_tokens)
        hashes.append(h)
        chars.append(n_chars)
        if len(ids) >= _TABLE_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self._rows, _DOC_TABLE_SCHEMA)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=_DOC_TABLE_SCHEMA))
            self._rows = ([], [], [], [], [])

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._cm.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        try:
            self._writer.close()
        finally:
            try:
                self._cm.__exit__(type(exc), exc, exc.__traceback__)
            except BaseException:
                pass


@dataclasses.dataclass(frozen=True)
class _Job:
    """One source's cache to build: what to read, where its cache goes, and its fingerprint."""

    spec: SourceSpec
    files: tuple[SourceFile, ...]
    fingerprint: str
    directory: str
    rule: SampleRule | None = None  # tokenize only the documents this passes (None: all)
    source_fingerprint: str = ""  # the fingerprint of the whole source's cache (no rule)
    earlier: str = ""  # a sampled cache of the same files whose documents this one copies (a top-up)
    refused: tuple[RefusedFile, ...] = ()  # the paths the source's patterns match that are not read

    def expected_work(self, index: int) -> float:
        """Roughly how much text file ``index`` makes this job tokenize (for ordering work only)."""
        sf = self.files[index]
        share = 1.0 if self.rule is None else max(self.rule.rates, default=1.0)
        return sf.size * TEXT_PER_FILE_BYTE[format_of(sf.path)] * share


class _TokenizeFileFn(beam.DoFn):
    """Read one input file, tokenize its documents in bounded batches, write its cache part.

    One DoFn serves every source of the pipeline, so the tokenizer travels (and loads) once.
    """

    def __init__(self, jobs: list[_Job], tokenizer: LoadedTokenizer):
        self._jobs, self._tokenizer = jobs, tokenizer
        self._encoder: Encoder | None = None
        self._earlier: dict[int, TokenCache] = {}  # per job: the sampled cache a top-up copies from

    def setup(self):
        self._encoder = Encoder(self._tokenizer)
        self._earlier = {j: TokenCache(job.earlier) for j, job in enumerate(self._jobs) if job.earlier}
        freeze_worker_state()  # what a worker built so far stays until it exits: spare its exit a collection

    def process(self, element: tuple[int, int]):
        j, index = element
        job = self._jobs[j]
        sf = job.files[index]
        prefix = storage.join(job.directory, _part_name(index))
        done = _finished_part(prefix, job.fingerprint, sf)
        if done is not None:  # a rerun keeps parts that were finished
            Metrics.counter(f"cache:{job.spec.name}", "parts_reused").inc()
            yield j, done
            return
        yield j, self._build(job, index, sf, prefix, self._earlier.get(j))

    def _build(self, job: _Job, index: int, sf: SourceFile, prefix: str, earlier_cache: TokenCache | None) -> dict:
        tally, stats = FileTally(), _Stats()
        rejects = _RejectsFile(prefix + ".rejects.jsonl")
        make_dirs(job.directory)
        writer = MMIDXWriter(prefix, self._tokenizer.dtype)
        table = _DocTable(prefix + ".docs.parquet")
        not_tokenized, unseen = 0, Unseen()
        earlier = _EarlierPart(earlier_cache, index, sf) if earlier_cache is not None else None
        try:
            for batch in _document_batches(read_documents(job.spec, sf, tally), rejects.add):
                hashes = np.array([doc_hash(d.doc_id) for d in batch], dtype=np.uint64)
                copied = np.zeros(len(batch), dtype=bool)
                if job.rule is not None:  # a sampled cache: decide before tokenizing
                    units, chars = sample_units(hashes), np.array([len(d.text) for d in batch])
                    keep = job.rule.tokenize_mask(units, chars)
                    not_tokenized += len(batch) - int(keep.sum())
                    unseen.add(units[~keep], chars[~keep])  # what a top-up would find, by unit and length
                    batch, hashes = [d for d, k in zip(batch, keep) if k], hashes[keep]
                    if earlier is not None:
                        copied = earlier.rule.tokenize_mask(units[keep], chars[keep])
                encoded = iter(self._encoder.encode_batch([d.text for d, c in zip(batch, copied) if not c]))
                for doc, h, c in zip(batch, hashes.tolist(), copied):
                    ids = earlier.take(h) if c else next(encoded)
                    writer.add(ids)
                    table.add(doc.doc_id, doc.subset, len(ids), h, len(doc.text))
                    stats.add(doc.subset, len(ids))
            if earlier is not None:
                earlier.finish()
            table.close()
            shard = writer.close()
            rejects.close()
        except BaseException as e:
            writer.abort()
            table.abort(e)
            rejects.abort()
            raise
        finally:
            if earlier is not None:
                earlier.close()
        count_tally(job.spec.name, tally)
        Metrics.counter(f"cache:{job.spec.name}", "tokens").inc(stats.tokens)
        Metrics.counter(f"cache:{job.spec.name}", "documents").inc(stats.docs)
        if not_tokenized:
            Metrics.counter(f"cache:{job.spec.name}", "not_tokenized").inc(not_tokenized)
        if earlier is not None:
            Metrics.counter(f"cache:{job.spec.name}", "tokens_copied").inc(earlier.tokens)
        summary = {
            "index": index,
            "part": _part_name(index),
            "fingerprint": job.fingerprint,
            "file": sf.rel,
            "file_size": sf.size,
            "tally": tally.as_dict(),
            "stats": stats.to_dict(),
            "shard": {k: v for k, v in shard.to_dict().items() if k != "prefix"},
            "rejects": rejects.count,
            "not_tokenized": not_tokenized,  # forwarded by the reader, left out by the sample rule
            "unseen": unseen.to_dict() if job.rule is not None else None,
        }
        write_json(prefix + ".json", summary)
        crash_point(f"cache-part:{job.spec.name}:{index}")
        return summary


class _EarlierPart:
    """One file's part of an earlier sampled cache whose rule the new cache's rule covers: its
    documents, in file order, are the ones the earlier rule passed, so a top-up takes their ids from
    it in turn (checking each document's hash) instead of tokenizing them again."""

    def __init__(self, cache: TokenCache, index: int, sf: SourceFile):
        self._cache = cache
        self.rule = cache.rule
        self._index, self._file = index, sf.rel
        part = cache.parts[index] if index < len(cache.parts) else {}
        if self.rule is None or part.get("file") != sf.rel:
            raise FormatError(f"{cache.directory}: not a sampled cache of {sf.rel} as part {index}; delete it and run again.")
        self._hashes = self._cache.doc_table(index, columns=["doc_hash"]).column("doc_hash").to_numpy()
        self._next, self.tokens = 0, 0

    def take(self, h: int) -> np.ndarray:
        k = self._next
        if k >= len(self._hashes) or int(self._hashes[k]) != h:
            raise FormatError(f"{self._cache.prefix(self._index)}: entry {k} is not the document its sample rule "
                              f"kept from {self._file}; the cache is damaged: delete {self._cache.directory} and run again.")
        self._next += 1
        ids = np.array(self._cache.tokens(self._index)[k])
        self.tokens += len(ids)
        return ids

    def finish(self) -> None:
        if self._next != len(self._hashes):
            raise FormatError(f"{self._cache.prefix(self._index)}: holds {len(self._hashes)} documents, but its sample rule "
                              f"keeps {self._next} of {self._file}; delete {self._cache.directory} and run again.")

    def close(self) -> None:
        self._cache.close()  # this part's token mapping (a worker builds one part at a time)


class _RejectsFile:
    """Rejected records as JSON lines, created only when there is one."""

    def __init__(self, path: str):
        self._path, self._cm, self._f, self.count = path, None, None, 0

    def add(self, reject: Reject) -> None:
        if self._f is None:
            self._cm = atomic_writer(self._path, "wb")
            self._f = self._cm.__enter__()
        self._f.write(orjson.dumps(reject.to_json()) + b"\n")
        self.count += 1

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        if self._cm is not None:
            try:
                self._cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass


def _document_batches(items: Iterator[Document | Reject], on_reject) -> Iterator[list[Document]]:
    """Group documents into batches of at most ``_BATCH_CHARS`` characters (a huge one alone)."""
    batch: list[Document] = []
    chars = 0
    for item in items:
        if isinstance(item, Reject):
            on_reject(item)
            continue
        if batch and chars + len(item.text) > _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
        batch.append(item)
        chars += len(item.text)
    if batch:
        yield batch


def _finished_part(prefix: str, fingerprint: str, sf: SourceFile) -> dict | None:
    path = prefix + ".json"
    if not storage.exists(path):
        return None
    summary = read_json(path)
    if summary.get("fingerprint") != fingerprint or summary.get("file") != sf.rel:
        return None
    if not (storage.exists(prefix + ".bin") and storage.exists(prefix + ".idx")):
        return None
    return summary


class _FinalizeCacheFn(beam.DoFn):
    """Check every part arrived, total them, write cache.json last."""

    def __init__(self, jobs: list[_Job], tokenizer: TokenizerInfo):
        self._jobs, self._tokenizer = jobs, tokenizer

    def process(self, element: tuple[int, Iterable[dict]]):
        j, summaries = element
        job = self._jobs[j]
        summaries = sorted(summaries, key=lambda s: s["index"])
        if [s["index"] for s in summaries] != list(range(len(job.files))):
            raise RuntimeError(f"cache {job.directory}: expected {len(job.files)} parts, got {len(summaries)}")
        stats, tally = _Stats(), collections.Counter()
        rejected = collections.Counter()
        corrupt, files = [], []
        not_tokenized, unseen = 0, Unseen()
        for s in summaries:
            not_tokenized += s.get("not_tokenized", 0)
            if s.get("unseen"):
                unseen.merge(s["unseen"])
            stats.merge(s["stats"])
            t = s["tally"]
            for k in ("read", "forwarded", "excluded_subset", "bom_skipped"):
                tally[k] += t[k]
            rejected.update(t["rejected"])
            if t["corrupt"]:
                corrupt.append({"file": s["file"], "error": t["corrupt"]})
            files.append({"file": s["file"], "size": s["file_size"], "read": t["read"]})
        for r in job.refused:  # counted here, once per cache: the listing found them on the driver
            count_refused(job.spec.name, r)
        manifest = {
            "cache_version": CACHE_VERSION,
            "source": job.spec.name,
            "spec": dataclasses.asdict(job.spec),
            "fingerprint": job.fingerprint,
            "tokenizer": {k: v for k, v in self._tokenizer.info().items() if k != "name"},  # sha256 identifies it
            "sample_rule": job.rule.to_dict() if job.rule is not None else None,
            "source_fingerprint": job.source_fingerprint,  # = fingerprint, unless a sample rule is set
            "accounting": {
                "read": tally["read"],
                "forwarded": tally["forwarded"],  # = documents tokenized + not_tokenized
                "not_tokenized": not_tokenized,
                "excluded_subset": tally["excluded_subset"],
                "rejected": sum(rejected.values()),
                "rejected_by_reason": dict(sorted(rejected.items())),
                "corrupt_files": corrupt,
                "bom_skipped": tally["bom_skipped"],  # files whose leading byte-order mark was skipped
                # Every file the source's patterns match: read (one part each, corrupt ones too) or refused.
                "files_matched": len(files) + len(job.refused),
                "files_read": len(files),
                "files_refused": [r.to_json() for r in job.refused],
                "files": files,  # per file read: its path, size and records read
            },
            "stats": stats.to_dict(),
            "unseen": unseen.to_dict() if job.rule is not None else None,  # sampled caches: topup.py
            "parts": [
                {"part": s["part"], "file": s["file"], "file_size": s["file_size"], "read": s["tally"]["read"],
                 "documents": s["stats"]["documents"], "tokens": s["stats"]["tokens"], "rejects": s["rejects"],
                 **{k: s["shard"][k] for k in ("bin_sha256", "idx_sha256")}}
                for s in summaries
            ],
        }
        write_json(storage.join(job.directory, "cache.json"), manifest)
        # No cleanup of temporaries here: a duplicate attempt of a tokenize step may still be writing
        # them (a runner's retry, Dask's recomputation); the driver removes them once the job has ended.
        yield manifest


class BuildCaches(beam.PTransform):
    """Tokenize the files of several sources into their caches, in one stage spread over workers.

    ``sources`` is a list of (spec, files) or (spec, files, SampleRule); outputs each finished cache's
    manifest. ``directories`` maps each source name to its cache folder. ``earlier`` maps a source
    to a sampled cache of the same files that its new rule covers: a top-up copies its documents.
    """

    def __init__(self, sources, tokenizer: LoadedTokenizer, cache_root: str, earlier: dict[str, str] | None = None):
        super().__init__()
        self._tokenizer = tokenizer
        self._jobs = []
        for spec, files, *rule in sources:
            rule = rule[0] if rule else None
            fp = cache_fingerprint(spec, files, tokenizer, rule)
            whole = cache_fingerprint(spec, files, tokenizer) if rule is not None else fp
            before = (earlier or {}).get(spec.name, "")
            if before:
                prior = TokenCache(before)
                if rule is None or prior.rule is None or not rule.covers(prior.rule) \
                        or prior.manifest.get("source_fingerprint") != whole:
                    raise ValueError(f"source {spec.name}: cache {before} is not a sample of the same files "
                                     "that the new rule covers")
            self._jobs.append(_Job(spec, tuple(files), fp, cache_dir(cache_root, spec.name, fp), rule, whole, before,
                                   refused_files(files)))
        self.directories = {job.spec.name: job.directory for job in self._jobs}

    def work_order(self, workers: int = 1) -> list[tuple[int, int]]:
        """(job, file index) of every file, laid out for ``workers`` local workers: Beam's local runner
        deals a stage's input out once, element k to worker k % workers, and each works through its
        share in order. The shares are balanced by expected text (``deal_in_turn``); remote runners,
        which balance by themselves, get the big files first."""
        work = [(j, i) for j, job in enumerate(self._jobs) for i in range(len(job.files))]
        work.sort(key=lambda ji: (-self._jobs[ji[0]].expected_work(ji[1]), ji))
        return [work[k] for k in deal_in_turn([self._jobs[j].expected_work(i) for j, i in work], workers)]

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self.work_order(local_workers(pbegin.pipeline)),
                                         reshuffle=False)  # SpreadFiles does it, in this order
            | "SpreadFiles" >> beam.Reshuffle()
            | "TokenizeFiles" >> beam.ParDo(_TokenizeFileFn(self._jobs, self._tokenizer))
            | "CollectParts" >> beam.GroupByKey()
            | "WriteCacheManifests" >> beam.ParDo(_FinalizeCacheFn(self._jobs, self._tokenizer.about()))
        )


def deal_in_turn(work: list[float], workers: int) -> list[int]:
    """An order of ``work`` (sorted largest first) such that dealing it out in turn, item k to worker
    k % workers, gives every worker about the same total: each item goes to the least loaded worker
    that still has a turn left (longest processing time first, with the deal's counts). With one
    worker, or items all equal, it is the order given."""
    workers = max(workers, 1)
    turns = [len(range(w, len(work), workers)) for w in range(workers)]
    shares: list[list[int]] = [[] for _ in turns]
    loads = [0.0] * len(turns)
    for k, size in enumerate(work):
        w = min((w for w in range(len(turns)) if len(shares[w]) < turns[w]), key=lambda w: (loads[w], w))
        shares[w].append(k)
        loads[w] += size
    return [shares[w][r] for r in range(max(turns, default=0)) for w in range(len(turns)) if r < len(shares[w])]


def local_workers(pipeline: beam.Pipeline) -> int:
    """How many workers Beam's local runner deals a stage's input out to (1 on any other runner)."""
    if type(pipeline.runner).__name__ not in ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "LocalRunner"):
        return 1
    return pipeline.options.view_as(DirectOptions).direct_num_workers or os.cpu_count() or 1


class BuildCache(BuildCaches):
    """One source's cache (``BuildCaches`` for a single source)."""

    def __init__(self, spec: SourceSpec, files: list[SourceFile], tokenizer: LoadedTokenizer, cache_root: str):
        super().__init__([(spec, files)], tokenizer, cache_root)
        self.directory = self.directories[spec.name]
        self.fingerprint = self._jobs[0].fingerprint


class TokenCache:
    """A finished cache, opened read-only: its manifest, document tables and token parts."""

    def __init__(self, directory: str):
        self.directory = directory
        path = storage.join(directory, "cache.json")
        if not storage.exists(path):
            raise FormatError(f"{directory}: no cache.json: not a finished token cache (run `mixprep tokenize`).")
        self.manifest = read_json(path)
        self._readers: dict[int, MMIDXReader] = {}

    @classmethod
    def find(cls, cache_root: str, spec: SourceSpec, files: list[SourceFile], tokenizer: LoadedTokenizer,
             rule: SampleRule | None = None) -> "TokenCache | None":
        """The finished cache that serves these files (and ``rule``): the whole source's; for a rule,
        else its own, else the smallest sample of the same files whose rule covers it. Each holds every
        document ``rule`` tokenizes, and selection reads it through ``rule``: the same shards."""
        whole = cache_fingerprint(spec, files, tokenizer)
        for fp in [whole] if rule is None else [whole, cache_fingerprint(spec, files, tokenizer, rule)]:
            directory = cache_dir(cache_root, spec.name, fp)
            if storage.exists(storage.join(directory, "cache.json")):
                return cls(directory)
        if rule is None:
            return None
        covering = [c for c in sampled_caches(storage.join(cache_root, spec.name), whole) if c.rule.covers(rule)]
        return min(covering, key=lambda c: (c.stats["tokens"], c.directory), default=None)

    @property
    def parts(self) -> list[dict]:
        return self.manifest["parts"]

    @property
    def stats(self) -> dict:
        return self.manifest["stats"]

    @property
    def rule(self) -> SampleRule | None:
        """The sample rule this cache was built with (None: every document is in it)."""
        d = self.manifest.get("sample_rule")
        return SampleRule.from_dict(d) if d else None

    def prefix(self, part: int) -> str:
        return storage.join(self.directory, self.parts[part]["part"])

    def doc_table(self, part: int, columns: list[str] | None = None) -> pa.Table:
        with storage.open_read(self.prefix(part) + ".docs.parquet") as f:
            return pq.read_table(pa.BufferReader(f.read()) if storage.is_remote(self.directory) else f,
                                 columns=columns)

    def tokens(self, part: int) -> MMIDXReader:
        if part not in self._readers:
            self._readers[part] = MMIDXReader(self.prefix(part))
        return self._readers[part]

    def release_pages(self) -> None:
        """``MMIDXReader.release_pages`` for every part opened so far."""
        for r in self._readers.values():
            r.release_pages()

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()


def sampled_caches(folder: str, source_fingerprint: str) -> list["TokenCache"]:
    """The finished sampled caches in a source's cache ``folder`` of the files whose whole cache has
    ``source_fingerprint`` (same files, reader, tokenizer and cache version)."""
    found = []
    for path in storage.list_files(folder, "*/cache.json"):
        try:
            cache = TokenCache(path[: -len("/cache.json")])
        except Exception as e:  # another run's damaged cache is not this run's input
            log.warning("ignoring token cache %s: %s", path, e)
            continue
        # (A sample from before the unseen histogram cannot serve a top-up: not one of them.)
        if cache.rule is not None and cache.manifest.get("source_fingerprint") == source_fingerprint \
                and "unseen" in cache.manifest:
            found.append(cache)
    return found


def remove_covered_samples(cache: "TokenCache") -> list[str]:
    """Delete the sampled caches of ``cache``'s files that hold no document it lacks (a top-up's first
    sample; every sample, when ``cache`` is whole): ``find`` serves their rules from ``cache``.
    One that another run is reading (``Readers``) stays. Returns the folders deleted."""
    folder = cache.directory.rsplit("/", 1)[0]
    source_fingerprint = cache.manifest.get("source_fingerprint") or cache.manifest["fingerprint"]
    removed = []
    for other in sampled_caches(folder, source_fingerprint):
        if other.directory != cache.directory and (cache.rule is None or cache.rule.covers(other.rule)):
            if runs := other_readers(other.directory):
                log.info("keeping token cache %s although %s covers it: runs %s read it", other.directory,
                         cache.directory, ", ".join(runs))
                continue
            storage.delete_tree(other.directory, first="cache.json")  # first: no half-deleted cache looks finished
            removed.append(other.directory)
    return removed


# Runs sharing a cache root: a run that reads a sampled cache marks it in the cache's readers/ folder
# until it ends, and another run that builds a cache covering it does not remove it meanwhile. A mark
# older than READ_MARK_SECONDS is a crashed run's. (A run that finds a sample in the instant another
# is removing it can still lose it: it then stops with a missing-file error; rerun it.)
READERS = "readers"
READ_MARK_SECONDS = 3 * 24 * 3600
RUN_ID = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Readers:
    """The sampled caches this run reads, each marked as read until ``close`` (a context manager)."""

    def __init__(self):
        self._marks: list[str] = []

    def add(self, cache: "TokenCache") -> None:
        if cache.rule is not None:  # whole caches are never removed
            self.mark(cache.directory)

    def mark(self, directory: str) -> None:
        path = storage.join(directory, READERS, f"{RUN_ID}.json")
        if path not in self._marks:
            make_dirs(storage.join(directory, READERS))
            write_json(path, {"run": RUN_ID, "since": time.time()})
            self._marks.append(path)

    def close(self) -> None:
        for path in self._marks:
            try:
                storage.delete(path)
            except OSError as e:  # a stale mark only delays a removal by READ_MARK_SECONDS
                log.warning("could not remove read mark %s: %s", path, e)
            if not storage.is_remote(path):  # object stores have no empty folders to leave behind
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(path))
        self._marks.clear()

    def __enter__(self) -> "Readers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def other_readers(directory: str) -> list[str]:
    """The runs other than this one that marked the cache in ``directory`` as read within READ_MARK_SECONDS."""
    now, runs = time.time(), []
    for path in storage.list_files(storage.join(directory, READERS), "*.json"):
        try:
            mark = read_json(path)
        except Exception:  # noqa: BLE001 - a mark being written or removed right now
            continue
        if mark.get("run") != RUN_ID and now - float(mark.get("since", 0)) < READ_MARK_SECONDS:
            runs.append(str(mark.get("run")))
    return runs
