"""``ReadSource``: one source's files -> Documents, with every bad record kept as a Reject.

    docs, rejects = pipeline | "ReadSource[c4]" >> ReadSource(spec, data_root)

Files are listed when the pipeline is built (``files.list_source_files``), spread over workers and
read one file per element. Counters, in the namespace ``source:<name>``: ``files``, ``read``,
``forwarded``, ``rejected`` (+ ``rejected_<reason>``), ``excluded_subset``, ``corrupt_files``,
``bom_skipped`` (files whose leading byte-order mark was skipped), ``files_refused`` (+
``files_refused_<reason>``: matched paths not read, see ``files.REFUSALS``).
For every source: read == forwarded + rejected + excluded_subset, and files matched == files + files_refused.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from ..document import Document, Reject
from ..errors import CorruptFileError
from .files import RefusedFile, SourceFile, list_source_files, open_source_file, refused_files
from .formats import format_of, iter_json_lines, iter_parquet_rows
from .hf_datasets import iter_dataset_rows, read_by_datasets
from .kinds import kind_named
from .spec import SourceSpec

__all__ = ["ReadSource", "read_documents", "count_refused", "count_tally", "FileTally", "DOCUMENTS", "REJECTS",
           "READER_VERSION"]

DOCUMENTS, REJECTS = "documents", "rejects"

# Bump when a change to reading would change documents or ids: it is part of the cache fingerprint.
READER_VERSION = 2  # 2: a JSON-lines file's leading byte-order mark is skipped, not a malformed first line


@dataclasses.dataclass
class FileTally:
    """What reading one file produced; the counters and the cache's stats are built from it."""

    read: int = 0
    forwarded: int = 0
    excluded_subset: int = 0
    rejected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    corrupt: str = ""  # the error, when a corrupt file was skipped
    bom_skipped: int = 0  # 1 when the file started with a byte-order mark

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "forwarded": self.forwarded,
            "excluded_subset": self.excluded_subset,
            "rejected": dict(sorted(self.rejected.items())),
            "corrupt": self.corrupt,
            "bom_skipped": self.bom_skipped,
        }


def read_documents(spec: SourceSpec, sf: SourceFile, tally: FileTally | None = None) -> Iterator[Document | Reject]:
    """Read one file of a source: Documents in file order, Rejects in place of bad records.

    A structural fault raises ``CorruptFileError`` naming the file, unless the source skips corrupt
    files: then what was read before the fault stands and one ``corrupt_file`` Reject records it.
    """
    tally = tally if tally is not None else FileTally()
    try:
        try:
            raw = open_source_file(sf.path)
        except Exception as e:  # OSError locally, BeamIOError on object stores
            raise CorruptFileError(sf.path, f"cannot be opened ({type(e).__name__}: {e}); was it moved or "
                                            "deleted after the files were listed?") from e
        with raw:
            yield from _read(spec, sf, raw, tally)
    except CorruptFileError as e:
        if not spec.skip_corrupt_files:
            raise
        tally.corrupt = e.problem
        yield Reject(spec.name, sf.rel, "", "corrupt_file", e.problem)


def _read(spec: SourceSpec, sf: SourceFile, raw, tally: FileTally) -> Iterator[Document | Reject]:
    text_key = spec.text_key
    subset_from = spec.subset_from
    fmt = format_of(sf.rel)
    if spec.dataset is not None and read_by_datasets(sf.rel):  # Arrow, csv, ...: hf_datasets.py reads them
        rows = iter_dataset_rows(spec, sf, raw)
    elif fmt == "parquet":
        rows = iter_parquet_rows(raw, sf.path, text_key, kind_named(spec.kind).meta_columns)
    else:
        rows = None
    if rows is not None:
        for row, text, meta in rows:
            tally.read += 1
            pos = f"#{row}"
            yield _document_or_reject(spec, sf, pos, sf.rel + pos, text, sf.folder, meta, None, tally)
        return
    for jl in iter_json_lines(raw, sf.path, fmt):
        tally.read += 1
        tally.bom_skipped += jl.bom
        pos = str(jl.line)
        if jl.obj is None:
            tally.rejected[jl.reason] += 1
            yield Reject(spec.name, sf.rel, pos, jl.reason, jl.detail, jl.raw)
            continue
        obj = jl.obj
        text = obj.get(text_key) if text_key in obj else _MISSING
        meta = _meta_of(obj, text_key)
        if subset_from == "folder":
            subset = sf.folder
        else:
            subset = _dotted(obj, subset_from)
            if not isinstance(subset, str) or not subset:
                tally.rejected["missing_subset"] += 1
                yield Reject(spec.name, sf.rel, pos, "missing_subset", f"no string field {subset_from}", jl.raw)
                continue
            if not spec.wants_subset(subset):  # folder subsets were filtered when listing files
                tally.excluded_subset += 1
                continue
        yield _document_or_reject(spec, sf, pos, f"{sf.rel}:{pos}", text, subset, meta, jl.raw, tally)


_MISSING = object()


def _document_or_reject(spec, sf, pos, doc_id, text, subset, meta, raw, tally) -> Document | Reject:
    reason = detail = ""
    if text is _MISSING or text is None:
        reason, detail = "missing_text", f"no value for {spec.text_key!r}"
    elif isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            reason, detail = "invalid_utf8", str(e)
    elif not isinstance(text, str):
        reason, detail = "wrong_type", f"{spec.text_key!r} is {type(text).__name__}, not a string"
    if not reason and not text.strip():
        reason, detail = "empty_text", "empty or whitespace-only text"
    if reason:
        tally.rejected[reason] += 1
        if raw is None:  # parquet rows: keep what there is as JSON
            raw = orjson.dumps({spec.text_key: text if isinstance(text, str) else repr(text), **meta})
        return Reject(spec.name, sf.rel, pos, reason, detail, raw)
    tally.forwarded += 1
    return Document(spec.name, subset, doc_id, text, meta)


def _meta_of(obj: dict, text_key: str) -> dict:
    """RedPajama rows carry metadata under ``meta`` (a dict, sometimes a JSON string) or at top level."""
    meta = obj.get("meta")
    if isinstance(meta, str):
        try:
            meta = orjson.loads(meta)
        except orjson.JSONDecodeError:
            meta = {"meta": meta}
    if isinstance(meta, dict):
        return meta
    return {k: v for k, v in obj.items() if k != text_key}


def _dotted(obj: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


class _ReadFileFn(beam.DoFn):
    """Reads one SourceFile; documents to the main output, rejects to ``REJECTS``."""

    def __init__(self, spec: SourceSpec):
        self._spec = spec

    def process(self, sf: SourceFile):
        tally = FileTally()
        for item in read_documents(self._spec, sf, tally):
            if isinstance(item, Reject):
                yield beam.pvalue.TaggedOutput(REJECTS, item)
            else:
                yield item
        count_tally(self._spec.name, tally)


class _CountRefusedFn(beam.DoFn):
    """Counts the paths a source's patterns match that are not read (``files.REFUSALS``)."""

    def __init__(self, source: str):
        self._source = source

    def process(self, refused: RefusedFile):
        count_refused(self._source, refused)
        return ()


def count_tally(source: str, tally: FileTally) -> None:
    """Add one file's tally to the ``source:<name>`` Beam counters."""
    ns = f"source:{source}"
    Metrics.counter(ns, "files").inc()
    Metrics.counter(ns, "read").inc(tally.read)
    Metrics.counter(ns, "forwarded").inc(tally.forwarded)
    Metrics.counter(ns, "excluded_subset").inc(tally.excluded_subset)
    Metrics.counter(ns, "rejected").inc(sum(tally.rejected.values()))
    for reason, n in tally.rejected.items():
        Metrics.counter(ns, f"rejected_{reason}").inc(n)
    if tally.corrupt:
        Metrics.counter(ns, "corrupt_files").inc()
    if tally.bom_skipped:
        Metrics.counter(ns, "bom_skipped").inc(tally.bom_skipped)


def count_refused(source: str, refused: RefusedFile) -> None:
    """Add one refused path to the ``source:<name>`` Beam counters."""
    ns = f"source:{source}"
    Metrics.counter(ns, "files_refused").inc()
    Metrics.counter(ns, f"files_refused_{refused.reason}").inc()


class ReadSource(beam.PTransform):
    """Read every file of one source. Returns a tuple-like of (documents, rejects) PCollections."""

    def __init__(self, spec: SourceSpec, data_root: str, files: list[SourceFile] | None = None):
        super().__init__()
        self._spec = spec
        self._files = files if files is not None else list_source_files(spec, data_root)

    @property
    def files(self) -> list[SourceFile]:
        return self._files

    def expand(self, pbegin):
        refused = refused_files(self._files)
        if refused:  # listed, never opened: only counted
            _ = (pbegin | "ListRefusedFiles" >> beam.Create(refused)
                 | "CountRefusedFiles" >> beam.ParDo(_CountRefusedFn(self._spec.name)))
        return (
            pbegin
            | "ListFiles" >> beam.Create(list(self._files))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadFileFn(self._spec)).with_outputs(REJECTS, main=DOCUMENTS)
        )
