"""Building token caches in Beam: one input file per element, one cache part per file, cache.json last."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions

from ..crashpoints import crash_point
from ..dedup.content import DEFAULT_NORMALIZATION, content_keys
from ..document import Document, Reject
from ..errors import FormatError
from ..hashing import doc_hash
from ..layout import (
    cache_dir,
    cache_manifest,
    doc_table,
    finished_part,
    part_name,
    part_prefix,
    part_summary,
    rejects_file,
)
from ..lifetime import freeze_worker_state
from ..mmidx import MMIDXWriter
from ..sampling import SampleRule, Unseen, sample_units
from ..sources import (
    FileTally,
    RefusedFile,
    SourceFile,
    SourceSpec,
    count_refused,
    count_tally,
    read_documents,
    refused_files,
)
from ..sources.formats import TEXT_PER_FILE_BYTE, format_of
from ..storage import atomic_writer, make_dirs, write_json
from ..tokenizer import Encoder, LoadedTokenizer, TokenizerInfo, batches_by_size
from .fingerprint import CACHE_VERSION, DOC_TABLE_SCHEMA, HISTOGRAM_BINS, cache_fingerprint
from .token_cache import TokenCache

log = logging.getLogger("mixprep")

_BATCH_CHARS = 1 << 22  # characters per encode call: bounds the tokenizer's transient memory
_TABLE_ROWS = 1 << 16  # doc-table rows per parquet row group

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
    """Streams (doc_id, subset, n_tokens, doc_hash, n_chars, content key) rows to parquet in row groups:
    memory stays bounded."""

    def __init__(self, path: str):
        self._cm = atomic_writer(path, "wb")
        self._writer = pq.ParquetWriter(self._cm.__enter__(), DOC_TABLE_SCHEMA, compression="zstd")
        self._rows: tuple[list, ...] = ([], [], [], [], [], [], [])

    def add(self, doc_id: str, subset: str, n_tokens: int, h: int, n_chars: int, key_hi: int, key_lo: int) -> None:
        ids, subsets, counts, hashes, chars, his, los = self._rows
        ids.append(doc_id)
        subsets.append(subset)
        counts.append(n_tokens)
        hashes.append(h)
        chars.append(n_chars)
        his.append(key_hi)
        los.append(key_lo)
        if len(ids) >= _TABLE_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self._rows, DOC_TABLE_SCHEMA)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=DOC_TABLE_SCHEMA))
            self._rows = ([], [], [], [], [], [], [])

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
    normalization: str = DEFAULT_NORMALIZATION  # of the content keys in the document table (dedup/content.py)

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
        prefix = part_prefix(job.directory, index)
        done = finished_part(prefix, job.fingerprint, sf.rel)
        if done is not None:  # a rerun keeps parts that were finished
            Metrics.counter(f"cache:{job.spec.name}", "parts_reused").inc()
            yield j, done
            return
        yield j, self._build(job, index, sf, prefix, self._earlier.get(j))

    def _build(self, job: _Job, index: int, sf: SourceFile, prefix: str, earlier_cache: TokenCache | None) -> dict:
        tally, stats = FileTally(), _Stats()
        rejects = _RejectsFile(rejects_file(prefix))
        make_dirs(job.directory)
        writer = MMIDXWriter(prefix, self._tokenizer.dtype)
        table = _DocTable(doc_table(prefix))
        not_tokenized, unseen = 0, Unseen()
        earlier = _EarlierPart(earlier_cache, index, sf) if earlier_cache is not None else None
        backend = self._encoder.backend  # a failed run-time check can switch it to `tokenizers` mid-part
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
                keys = content_keys([d.text for d in batch], job.normalization).tolist()
                for doc, h, c, (hi, lo) in zip(batch, hashes.tolist(), copied, keys):
                    ids = earlier.take(h) if c else next(encoded)
                    writer.add(ids)
                    table.add(doc.doc_id, doc.subset, len(ids), h, len(doc.text), hi, lo)
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
            "part": part_name(index),
            "fingerprint": job.fingerprint,
            "file": sf.rel,
            "file_size": sf.size,
            "tally": tally.as_dict(),
            "stats": stats.to_dict(),
            "shard": {k: v for k, v in shard.to_dict().items() if k != "prefix"},
            "rejects": rejects.count,
            "not_tokenized": not_tokenized,  # forwarded by the reader, left out by the sample rule
            "unseen": unseen.to_dict() if job.rule is not None else None,
            "encoder": _encoder_record(self._encoder, backend),  # not in the fingerprint: the ids are the same
        }
        write_json(part_summary(prefix), summary)
        crash_point(f"cache-part:{job.spec.name}:{index}")
        return summary


def _encoder_record(encoder: Encoder, first: str) -> dict:
    """What encoded a part: ``backends`` (the one it started with, and `tokenizers` if a run-time check
    switched to it), the last one's version, how it was requested and which faster ones were refused."""
    info = encoder.backend_info()
    return {"backends": list(dict.fromkeys([first, info["backend"]])), **info}


def encoders_of(parts: Iterable[dict]) -> dict:
    """{backend: {"parts": n, "version": v}} over part summaries (or cache.json's parts); parts built
    before encoders were recorded count under "unrecorded"."""
    out: dict = {}
    for part in parts:
        record = part.get("encoder") or {}
        for name in record.get("backends") or ["unrecorded"]:
            entry = out.setdefault(name, {"parts": 0})
            entry["parts"] += 1
            if name == record.get("backend") and record.get("version"):
                entry["version"] = record["version"]
    return dict(sorted(out.items()))


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
            raise FormatError(f"{cache.directory}: not a sampled cache of {sf.rel} as part {index}; "
                              "delete it and run again.")
        self._hashes = self._cache.doc_table(index, columns=["doc_hash"]).column("doc_hash").to_numpy()
        self._next, self.tokens = 0, 0

    def take(self, h: int) -> np.ndarray:
        k = self._next
        if k >= len(self._hashes) or int(self._hashes[k]) != h:
            raise FormatError(f"{self._cache.prefix(self._index)}: entry {k} is not the document its sample rule "
                              f"kept from {self._file}; the cache is damaged: delete {self._cache.directory} "
                              "and run again.")
        self._next += 1
        ids = np.array(self._cache.tokens(self._index)[k])
        self.tokens += len(ids)
        return ids

    def finish(self) -> None:
        if self._next != len(self._hashes):
            raise FormatError(f"{self._cache.prefix(self._index)}: holds {len(self._hashes)} documents, but its "
                              f"sample rule keeps {self._next} of {self._file}; delete {self._cache.directory} "
                              "and run again.")

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

    def documents() -> Iterator[Document]:
        for item in items:
            if isinstance(item, Reject):
                on_reject(item)
            else:
                yield item

    return batches_by_size(documents(), lambda doc: len(doc.text), _BATCH_CHARS)




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
            "content_normalization": job.normalization,  # of the document table's content keys
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
            "encoders": encoders_of(summaries),  # which encoder backends built the parts (same ids)
            "unseen": unseen.to_dict() if job.rule is not None else None,  # sampled caches: topup.py
            "parts": [
                {"part": s["part"], "file": s["file"], "file_size": s["file_size"], "read": s["tally"]["read"],
                 "documents": s["stats"]["documents"], "tokens": s["stats"]["tokens"], "rejects": s["rejects"],
                 **{k: s["shard"][k] for k in ("bin_sha256", "idx_sha256")},
                 "encoder": ({k: s["encoder"][k] for k in ("backends", "backend", "version")}
                             if s.get("encoder") else None)}
                for s in summaries
            ],
        }
        write_json(cache_manifest(job.directory), manifest)
        # No cleanup of temporaries here: a duplicate attempt of a tokenize step may still be writing
        # them (a runner's retry, Dask's recomputation); the driver removes them once the job has ended.
        yield manifest


class BuildCaches(beam.PTransform):
    """Tokenize the files of several sources into their caches, in one stage spread over workers.

    ``sources`` is a list of (spec, files) or (spec, files, SampleRule); outputs each finished cache's
    manifest. ``directories`` maps each source name to its cache folder. ``earlier`` maps a source
    to a sampled cache of the same files that its new rule covers: a top-up copies its documents.
    """

    def __init__(self, sources, tokenizer: LoadedTokenizer, cache_root: str, earlier: dict[str, str] | None = None,
                 normalization: str = DEFAULT_NORMALIZATION):
        super().__init__()
        self._tokenizer = tokenizer
        self._jobs = []
        for spec, files, *rule in sources:
            rule = rule[0] if rule else None
            fp = cache_fingerprint(spec, files, tokenizer, rule, normalization)
            whole = cache_fingerprint(spec, files, tokenizer, None, normalization) if rule is not None else fp
            before = (earlier or {}).get(spec.name, "")
            if before:
                prior = TokenCache(before)
                if rule is None or prior.rule is None or not rule.covers(prior.rule) \
                        or prior.manifest.get("source_fingerprint") != whole:
                    raise ValueError(f"source {spec.name}: cache {before} is not a sample of the same files "
                                     "that the new rule covers")
            self._jobs.append(_Job(spec, tuple(files), fp, cache_dir(cache_root, spec.name, fp), rule, whole, before,
                                   refused_files(files), normalization))
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
