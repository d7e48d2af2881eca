"""Hugging Face datasets as a source (kind ``hf_dataset``): a hub dataset by id, config and split, a
local folder in the hub's layout, or a folder written by ``Dataset.save_to_disk``.

    - name: fineweb
      kind: hf_dataset
      dataset: {path: HuggingFaceFW/fineweb-edu, name: sample-10BT, split: train}
      text_field: text

The unit of work stays one file. For a hub dataset or a hub-layout folder, ``datasets`` resolves
which data files make the config's split (the card's ``configs:`` header, the hub's file-naming
conventions, the revision's commit) and each becomes a SourceFile whose ``rel`` is its path in the
dataset: the same files in the same order on every run and machine. For a ``save_to_disk`` folder
the files are the Arrow shards its ``state.json`` lists (``SPLIT/`` in front for a DatasetDict).

Reading, by suffix (``read_by_datasets``): parquet and JSON lines go through mixprep's own readers
(ids ``rel#row`` / ``rel:line``, a malformed line is one Reject, as for every source); Arrow files
through pyarrow's IPC reader, batch by batch (``rel#row``); any other format ``datasets`` reads (csv,
text, ...) by streaming that file's shard of the split (``rel#row``). Every record goes through the
same checks as any source's: missing, empty or non-string text is a counted Reject.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from typing import Any, BinaryIO, Iterator

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from .. import storage
from ..errors import CorruptFileError, SourceError
from .spec import SourceFile, SourceSpec

__all__ = ["dataset_location", "iter_dataset_rows", "list_dataset_files", "read_by_datasets"]

_BATCH_ROWS = 1024  # rows per Arrow batch handed to the reader: bounds memory per file
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes next to its shards
# Formats mixprep reads itself (formats.py): per-line rejects and "rel:line" ids for JSON lines.
_OWN_SUFFIX = re.compile(r"\.(parquet|(jsonl|json|ndjson)(\.gz|\.zst|\.zstd)?)$", re.IGNORECASE)
_HUB_DATASETS = "hf://datasets/"
# A hub data file as `datasets` names it: hf://datasets/ORG/NAME@COMMIT/PATH_IN_REPO.
_HUB_FILE = re.compile(r"^(hf://datasets/([^@]+)@([^/]+))/(.+)$")


def read_by_datasets(rel: str) -> bool:
    """Whether this module reads a dataset's file (Arrow, csv, text...) rather than formats.py.

    >>> [read_by_datasets(p) for p in ("data/a.parquet", "b.jsonl.zst", "x.json", "data-00000-of-00002.arrow", "t.csv")]
    [False, False, False, True, True]
    """
    return _OWN_SUFFIX.search(rel) is None


def dataset_location(spec: SourceSpec, data_root: str) -> str:
    """The dataset's folder (absolute, or a URI), or ``hf://datasets/ID`` for a hub id.

    A relative path names a folder under the data root when there is one there, as ``root`` does;
    otherwise it is a hub id, and only the hub is asked (never a folder of the working directory).
    """
    path = spec.dataset.path
    if storage.is_remote(path) or os.path.isabs(path):
        return path.rstrip("/")
    local = storage.join(data_root, path)
    if storage.is_remote(local):  # only save_to_disk folders are read from object stores
        found = bool(_saved_marker(local))
    else:
        local, found = os.path.abspath(local), os.path.isdir(local)
    return local.rstrip("/") if found else _HUB_DATASETS + path.strip("/")


def list_dataset_files(spec: SourceSpec, data_root: str) -> list[SourceFile]:
    """The source's files: the dataset's data files for its config and split, in the dataset's order."""
    location = dataset_location(spec, data_root)
    marker = _saved_marker(location)
    files = _saved_files(spec, location, marker) if marker else _resolved_files(spec, location)
    kept = [f for f in files if spec.wants_subset(f.folder)]
    if not kept:
        raise SourceError(f"source {spec.name!r}: include={list(spec.include)} exclude={list(spec.exclude)} "
                          f"leave none of the {len(files)} files of dataset {spec.dataset.path!r}.")
    return kept


def iter_dataset_rows(spec: SourceSpec, sf: SourceFile, raw: BinaryIO) -> Iterator[tuple[int, Any, dict]]:
    """(row, text as stored, meta) for each record of a file ``read_by_datasets`` claims (0-based rows)."""
    if sf.rel.lower().endswith(".arrow"):
        return iter_arrow_rows(raw, sf.path, spec.text_key)
    return _streamed_rows(spec, sf)


# --- save_to_disk folders ------------------------------------------------------------------------


def _saved_marker(location: str) -> str:
    """Which save_to_disk marker the folder holds ("" for none: a hub id or a hub-layout folder)."""
    if location.startswith("hf://") or not (storage.is_remote(location) or os.path.isdir(location)):
        return ""
    return next((m for m in _SAVED_MARKERS if storage.exists(storage.join(location, m))), "")


def _saved_files(spec: SourceSpec, root: str, marker: str) -> list[SourceFile]:
    """The Arrow shards of the split (a DatasetDict's ``SPLIT/`` folder, or the one Dataset)."""
    split, prefix = spec.dataset.split, ""
    if marker == "dataset_dict.json":
        splits = storage.read_json(storage.join(root, "dataset_dict.json")).get("splits", [])
        if split not in splits:
            raise SourceError(f"source {spec.name!r}: the dataset saved at {root} has no split {split!r}; "
                              f"its splits: {', '.join(splits)}. Set dataset.split.")
        prefix = split + "/"
    folder = storage.join(root, prefix) if prefix else root
    try:
        state = storage.read_json(storage.join(folder, "state.json"))
        names = [d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SourceError(f"source {spec.name!r}: {folder}/state.json does not list the dataset's files ({e}); "
                          "was the folder written by save_to_disk?") from e
    if not prefix and state.get("_split") not in (None, split):
        raise SourceError(f"source {spec.name!r}: the dataset saved at {root} is split {state['_split']!r}, "
                          f"not {split!r}. Set dataset.split to {state['_split']!r}.")
    return [_source_file(storage.join(folder, n), prefix + n, _local_or_remote_size(storage.join(folder, n)))
            for n in names]


def _local_or_remote_size(path: str) -> int:
    if not storage.is_remote(path):
        return os.path.getsize(path)
    (match,) = FileSystems.match([path])
    return match.metadata_list[0].size_in_bytes


def iter_arrow_rows(raw: BinaryIO, path: str, text_column: str) -> Iterator[tuple[int, Any, dict]]:
    """Rows of an Arrow IPC stream (what save_to_disk writes) or file, one record batch at a time."""
    schema, batches = _open_arrow(raw, path)
    names = schema.names
    if text_column not in names:
        raise CorruptFileError(path, f"Arrow file has no column {text_column!r} (columns: {', '.join(names)})")
    column = names.index(text_column)
    row = 0
    try:
        for batch in batches:
            for text in batch.column(column).to_pylist():
                yield row, text, {}
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise CorruptFileError(path, f"Arrow stream is truncated or corrupt after row {row} ({e})") from e


def _open_arrow(raw: BinaryIO, path: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(schema, record batches) of the IPC stream format, else of the IPC file format (read batch by
    batch too), as ``datasets``' own Arrow builder accepts both."""
    try:
        reader = pa.ipc.open_stream(raw)
        return reader.schema, iter(reader)
    except (pa.ArrowException, OSError) as stream_error:
        try:
            raw.seek(0)
            reader = pa.ipc.open_file(raw)
        except (pa.ArrowException, OSError):
            raise CorruptFileError(path, f"not an Arrow IPC stream or file ({stream_error})") from stream_error
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))


# --- datasets resolved by `datasets` (hub ids, hub-layout folders) ------------------------------


@functools.lru_cache(maxsize=16)
def _builder(location: str, name: str | None, revision: str | None):
    """The dataset's builder: which files make each split of config ``name`` (once per process)."""
    import datasets  # imported here: it takes a second, and only these sources need it

    try:
        return datasets.load_dataset_builder(location, name, revision=revision)
    except Exception as e:  # DatasetNotFoundError, ValueError (unknown config), connection errors
        raise SourceError(
            f"cannot resolve the Hugging Face dataset {location!r} (config {name!r}, revision {revision!r}): "
            f"{type(e).__name__}: {e}. Check dataset.path and dataset.name; a hub dataset needs the hub "
            "(or HF_ENDPOINT, a reachable mirror): offline, download it and point dataset.path at the folder."
        ) from e


def _split_files(location: str, name: str | None, split: str, revision: str | None) -> list[str]:
    builder = _builder(location, name, revision)
    splits = {str(k): list(v) for k, v in (builder.config.data_files or {}).items()}
    if not splits.get(split):
        raise SourceError(f"Hugging Face dataset {location!r} (config {builder.config.name!r}) has no split "
                          f"{split!r}; its splits: {', '.join(splits) or 'none'}. Set dataset.split.")
    return splits[split]


def _resolved_files(spec: SourceSpec, location: str) -> list[SourceFile]:
    ref = spec.dataset
    paths = _split_files(location, ref.name, ref.split, ref.revision)
    if any(read_by_datasets(p) and not p.lower().endswith(".arrow") for p in paths):
        _check_streamable(spec, location)
    sizes = _hub_sizes(paths) if _HUB_FILE.match(paths[0]) else {p: os.path.getsize(p) for p in paths}
    return [_source_file(p, _rel_in_dataset(p, location), sizes[p]) for p in paths]


def _rel_in_dataset(path: str, location: str) -> str:
    """A data file's path inside the dataset: the same on every machine and run.

    >>> _rel_in_dataset("hf://datasets/org/ds@0123abc/data/train-00000-of-00002.parquet", "hf://datasets/org/ds")
    'data/train-00000-of-00002.parquet'
    >>> _rel_in_dataset("/data/hub/ds/data/a.csv", "/data/hub/ds")
    'data/a.csv'
    """
    hub = _HUB_FILE.match(path)
    if hub:
        return hub.group(4)
    rel = os.path.relpath(path, location)
    if rel.startswith(".."):
        raise SourceError(f"data file {path} of dataset {location} lies outside its folder.")
    return rel.replace(os.sep, "/")


def _hub_sizes(paths: list[str]) -> dict[str, int]:
    """File sizes from one hub listing per folder (a dataset has few folders and may have 1000s of files)."""
    from huggingface_hub import HfFileSystem

    fs, sizes = HfFileSystem(), {}
    for parent in sorted({p.rsplit("/", 1)[0] for p in paths}):
        try:
            listed = fs.ls(parent[len("hf://"):], detail=True)
        except Exception as e:
            raise SourceError(f"cannot list {parent} on the Hugging Face hub: {type(e).__name__}: {e}") from e
        sizes.update({f"{parent}/{info['name'].rsplit('/', 1)[-1]}": info.get("size", 0) for info in listed})
    return {p: sizes.get(p, 0) for p in paths}


def _source_file(path: str, rel: str, size: int) -> SourceFile:
    return SourceFile(path, rel, size, rel.split("/", 1)[0] if "/" in rel else "")


@functools.lru_cache(maxsize=16)
def _streamed_split(location: str, name: str | None, split: str, revision: str | None):
    """(data files, streaming dataset) of the split: shard i of ``num_shards`` is data file i.

    ``IterableDataset.shard(n, i)`` splits a dataset by its data sources, contiguously and in order,
    and a packaged builder's sources are the split's data files in ``config.data_files`` order, so
    ``shard(len(files), i)`` streams exactly file i (checked: a builder that shards otherwise, e.g.
    files in archives, is refused rather than read under the wrong names).
    """
    files = _split_files(location, name, split, revision)
    stream = _builder(location, name, revision).as_streaming_dataset(split=split)
    if stream.num_shards != len(files):
        raise SourceError(f"Hugging Face dataset {location!r} streams {stream.num_shards} shards for its "
                          f"{len(files)} data files of split {split!r}: mixprep reads one file per shard.")
    return tuple(files), stream


def _check_streamable(spec: SourceSpec, location: str) -> None:
    """Before any work: one shard per data file, and the text column (when the format declares columns)."""
    ref = spec.dataset
    features = _streamed_split(location, ref.name, ref.split, ref.revision)[1].features
    if features is not None and spec.text_key not in features:
        raise SourceError(f"source {spec.name!r}: dataset {ref.path!r} has no column {spec.text_key!r} "
                          f"(columns: {', '.join(features)}). Set text_field.")


def _streamed_rows(spec: SourceSpec, sf: SourceFile) -> Iterator[tuple[int, Any, dict]]:
    """Stream one data file as its shard of the split, in Arrow batches of the text column."""
    ref = spec.dataset
    root = sf.path[: len(sf.path) - len(sf.rel) - 1]
    hub = _HUB_FILE.match(sf.path)
    # A hub file's name pins the commit it was listed at: resolve that commit, not the branch's head.
    location, revision = (_HUB_DATASETS + hub.group(2), urllib.parse.unquote(hub.group(3))) if hub \
        else (root, ref.revision)
    files, stream = _streamed_split(location, ref.name, ref.split, revision)
    if sf.path not in files:
        raise CorruptFileError(sf.path, f"is no longer a data file of split {ref.split!r}: the dataset changed "
                                        "after its files were listed; run again")
    row = 0
    try:
        shard = stream.shard(len(files), files.index(sf.path)).select_columns([spec.text_key])
        for table in shard.with_format("arrow").iter(batch_size=_BATCH_ROWS):
            for text in table.column(0).to_pylist():
                yield row, text, {}
                row += 1
    except KeyError as e:  # the file (csv, ...) has no such column
        raise CorruptFileError(sf.path, f"has no column {spec.text_key!r} ({e})") from e
    except (pa.ArrowException, ValueError, OSError) as e:  # pyarrow's and the builders' errors on bad data
        raise CorruptFileError(sf.path, f"unreadable after row {row} ({type(e).__name__}: {e})") from e
