"""Listing and opening a source's files, on any Beam filesystem or the Hugging Face hub.

Files are listed once, when the pipeline is built: the sorted list fixes document ids, feeds the
cache fingerprint, and turns "this glob matches nothing" into an error before any work is done.
"""

from __future__ import annotations

import dataclasses
import os
from typing import BinaryIO

from apache_beam.io.filesystems import FileSystems

from .. import storage
from ..errors import SourceError
from .spec import SourceSpec

__all__ = ["SourceFile", "list_source_files", "open_source_file", "source_root"]

_HUB_PREFIX = "hf://"


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One input file: where to open it, its id-forming relative path, size and folder subset."""

    path: str
    rel: str
    size: int
    folder: str  # first directory of ``rel`` ("" for files at the root)


def source_root(spec: SourceSpec, data_root: str) -> str:
    """The folder the source's globs and doc ids are relative to."""
    root = spec.hub if spec.hub else spec.root
    if root and (storage.is_remote(root) or os.path.isabs(root)):
        base = root
    elif spec.hub and not os.path.isdir(spec.hub):
        return f"{_HUB_PREFIX}datasets/{spec.hub}@{spec.revision}"
    elif spec.hub:
        base = spec.hub
    else:
        base = storage.join(data_root, root) if root else data_root
    if not storage.is_remote(base):
        base = os.path.abspath(base)
    return base.rstrip("/")


def list_source_files(spec: SourceSpec, data_root: str) -> list[SourceFile]:
    """Every file of the source, sorted by relative path, after folder-level include/exclude."""
    if spec.dataset is not None:  # a Hugging Face dataset: `datasets` says which files (hf_datasets.py)
        from .hf_datasets import list_dataset_files  # imports `datasets` (slow) only for such sources

        return list_dataset_files(spec, data_root)
    root = source_root(spec, data_root)
    found: dict[str, SourceFile] = {}
    for pattern in spec.globs:
        matches = _match_hub(root, pattern, spec) if root.startswith(_HUB_PREFIX) else _match(root, pattern)
        if not matches:
            raise SourceError(
                f"source {spec.name!r}: no file matches {pattern!r} under {root}. Check the data root "
                "(--data-root), the source's `root` and `paths`, or that the files were downloaded."
            )
        for path, size in matches:
            rel = path[len(root) + 1 :]
            found[rel] = SourceFile(path, rel, size, rel.split("/", 1)[0] if "/" in rel else "")
    files = [found[rel] for rel in sorted(found)]
    if spec.subset_from == "folder":
        files = [f for f in files if spec.wants_subset(f.folder)]
        if not files:
            raise SourceError(
                f"source {spec.name!r}: include={list(spec.include)} exclude={list(spec.exclude)} "
                f"leave no files under {root}."
            )
    return files


def _match(root: str, pattern: str) -> list[tuple[str, int]]:
    try:
        (result,) = FileSystems.match([FileSystems.join(root, pattern)])
    except Exception as e:  # Beam raises BeamIOError for unreachable stores and missing buckets
        raise SourceError(f"cannot list {FileSystems.join(root, pattern)}: {e}") from e
    return [(m.path, m.size_in_bytes) for m in result.metadata_list]


def _match_hub(root: str, pattern: str, spec: SourceSpec) -> list[tuple[str, int]]:
    """List a hub dataset's files through huggingface_hub (what `datasets` streams through)."""
    try:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        repo = root[len(_HUB_PREFIX) :]
        hits = fs.glob(f"{repo}/{pattern}", detail=True)
    except Exception as e:
        raise SourceError(
            f"source {spec.name!r}: cannot list the Hugging Face hub dataset {spec.hub!r} "
            f"(revision {spec.revision}): {type(e).__name__}: {e}. This machine may be offline: "
            "download the files (e.g. `huggingface-cli download --repo-type dataset ...`) and point "
            "the source's `root` at them, or set HF_ENDPOINT to a reachable mirror."
        ) from e
    return [(_HUB_PREFIX + path, info.get("size", 0)) for path, info in sorted(hits.items())]


def open_source_file(path: str) -> BinaryIO:
    """Open raw bytes (no decompression: the format layer decompresses and detects truncation)."""
    if path.startswith(_HUB_PREFIX):
        from huggingface_hub import HfFileSystem

        return HfFileSystem().open(path[len(_HUB_PREFIX) :], "rb")
    return storage.open_read(path)
