"""Listing and opening a source's files, on any Beam filesystem or the Hugging Face hub.

Files are listed once, when the pipeline is built: the sorted list fixes document ids, feeds the
cache fingerprint, and turns "this glob matches nothing" into an error before any work is done.

Every path a source's patterns match is either read or refused with a reason (``REFUSALS``), never
dropped: ``list_source_files`` returns a ``Listing``, the files to read with ``.refused`` alongside,
and a refused path stops the run unless the source sets ``skip_corrupt_files``. Patterns have
Beam's glob syntax on every filesystem (``*`` stays inside a folder, ``**`` crosses folders).
Local folders are walked here: links to files and folders are followed (a hub cache is made of
links) and a document's id keeps the path as seen under the source root; a link back to a folder
above it is a loop. Directories and special files are refused before anything opens them. Object
stores have no links or special files: a key ending in "/" (a folder marker) or a prefix that a
pattern matches is a directory there; the hub's listing says which entries are directories.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
import re
import stat
from typing import BinaryIO, Iterable, Sequence

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from .. import storage
from ..errors import SourceError
from .spec import SourceFile, SourceSpec

__all__ = ["Listing", "REFUSALS", "RefusedFile", "SourceFile", "list_source_files", "open_source_file",
           "refused_files", "source_root"]

_HUB_PREFIX = "hf://"

# Why a matched path is not read (each refusal's ``detail`` says it of the path at hand).
REFUSALS = {
    "directory": "is a directory, not a file (Spark writes `part-*.parquet` folders: match the files inside)",
    "special_file": "is a named pipe, socket or device, not a regular file",
    "dangling_link": "is a symbolic link to a path that does not exist",
    "link_loop": "is a symbolic link that loops (to itself, or to a folder above it)",
    "unreadable": "cannot be listed or examined (permissions, I/O error)",
}
_SHOWN_REFUSALS = 5  # in the error that stops a run


@dataclasses.dataclass(frozen=True)
class RefusedFile:
    """A path a source's patterns match that is not read: ``reason`` is a key of ``REFUSALS``."""

    path: str
    rel: str
    reason: str
    detail: str

    def to_json(self) -> dict:
        return {"file": self.rel, "reason": self.reason, "error": self.detail}


class Listing(list):
    """A source's files to read (``SourceFile``s sorted by ``rel``: a plain list to every reader), and
    ``refused``: the paths its patterns match that are not read. Files matched = len + len(refused)."""

    def __init__(self, files: Iterable[SourceFile] = (), refused: Iterable[RefusedFile] = ()):
        super().__init__(files)
        self.refused = tuple(refused)


def refused_files(files: Sequence[SourceFile]) -> tuple[RefusedFile, ...]:
    """The refused paths listed with ``files`` (none for a list not made by ``list_source_files``)."""
    return files.refused if isinstance(files, Listing) else ()


@dataclasses.dataclass(frozen=True)
class _Entry:
    """What a listing found at ``rel``: kind "file", "directory", or a reason of ``REFUSALS``."""

    rel: str
    path: str
    kind: str
    size: int = 0
    detail: str = ""
    blocked: bool = False  # a folder the walk could not enter (a loop, an unlistable folder): its name is its subset

    @property
    def subset_folder(self) -> str:
        return _folder(self.rel + "/" if self.blocked else self.rel)


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


def list_source_files(spec: SourceSpec, data_root: str) -> Listing:
    """Every file of the source to read, sorted by relative path, after folder-level include/exclude;
    ``.refused``: the matched paths that are not read (an error, unless ``skip_corrupt_files``)."""
    if spec.dataset is not None:  # a Hugging Face dataset: `datasets` says which files (hf_datasets.py)
        from .hf_datasets import list_dataset_files  # imports `datasets` (slow) only for such sources

        return list_dataset_files(spec, data_root)
    root = source_root(spec, data_root)
    found: dict[str, _Entry] = {}
    for pattern in spec.globs:
        entries = _list(root, pattern, spec)
        if not entries:
            raise SourceError(
                f"source {spec.name!r}: no file matches {pattern!r} under {root}. Check the data root "
                "(--data-root), the source's `root` and `paths`, or that the files were downloaded."
            )
        found.update((e.rel, e) for e in entries)
    if spec.subset_from == "folder":
        found = {rel: e for rel, e in found.items() if spec.wants_subset(e.subset_folder)}
        if not found:
            raise SourceError(
                f"source {spec.name!r}: include={list(spec.include)} exclude={list(spec.exclude)} "
                f"leave no files under {root}."
            )
    listing = _sort_out(found)
    if listing.refused and not spec.skip_corrupt_files:
        raise _refusal_error(spec, root, listing.refused)
    if not listing:
        raise SourceError(f"source {spec.name!r}: every path its patterns match under {root} is refused "
                          f"({', '.join(sorted({r.reason for r in listing.refused}))}): there is nothing to read.")
    return listing


def _folder(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else ""


def _sort_out(found: dict[str, _Entry]) -> Listing:
    """Files to read and refusals; a matched folder is only a way to what is matched beneath it, if anything is."""
    beneath = {rel[:i] for rel in found for i, c in enumerate(rel) if c == "/"}
    files, refused = [], []
    for rel in sorted(found):
        e = found[rel]
        if e.kind == "file":
            files.append(SourceFile(e.path, rel, e.size, _folder(rel)))
        elif not (e.kind == "directory" and rel in beneath):
            refused.append(RefusedFile(e.path, rel, e.kind, e.detail))
    return Listing(files, refused)


def _refusal_error(spec: SourceSpec, root: str, refused: Sequence[RefusedFile]) -> SourceError:
    shown = "; ".join(f"{r.path} {r.detail}" for r in refused[:_SHOWN_REFUSALS])
    more = f"; and {len(refused) - _SHOWN_REFUSALS} more" if len(refused) > _SHOWN_REFUSALS else ""
    return SourceError(
        f"source {spec.name!r}: {len(refused)} of the paths its patterns match under {root} cannot be read: "
        f"{shown}{more}. Fix or remove them, narrow the source's `paths`, or set `skip_corrupt_files: true` on "
        "the source to record them as refused in the accounting and read the rest."
    )


def _list(root: str, pattern: str, spec: SourceSpec) -> list[_Entry]:
    if root.startswith(_HUB_PREFIX):
        return _list_hub(root, pattern, spec)
    pattern = pattern + "*" if pattern.endswith("/") else pattern  # as Beam's match reads a folder
    return _list_store(root, pattern) if storage.is_remote(root) else _list_local(root, pattern)


def _matcher(pattern: str):
    """Beam's glob syntax on relative paths (the root is never read as a pattern)."""
    return re.compile(FileSystem.translate_pattern(pattern)).match


def _literal_prefix(pattern: str) -> str:
    return re.match(r"[^[*?]*", pattern).group(0)


def _list_local(root: str, pattern: str) -> list[_Entry]:
    """Walk the folders ``pattern`` can reach, following links, and sort each match by its stat:
    nothing is opened. A folder reached again beneath itself (a loop) is reported, not entered."""
    match = _matcher(pattern)
    # Every match has this many "/" unless "**" (any path) or "?" / "[...]" (which may match "/") say otherwise.
    depth = None if re.search(r"\*\*|[?[]", pattern) else pattern.count("/")
    start = posixpath.dirname(_literal_prefix(pattern))
    top = os.path.join(root, start) if start else root
    try:
        st = os.stat(top)
    except OSError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        return []
    found = []
    stack = [(start, top, frozenset([(st.st_dev, st.st_ino)]))]
    while stack:
        folder, path, above = stack.pop()
        try:
            with os.scandir(path) as it:
                listed = list(it)
        except OSError as e:
            found.append(_Entry(folder or ".", path, "unreadable", detail=f"cannot be listed ({e.strerror or e})",
                                blocked=True))
            continue
        for de in listed:
            rel = f"{folder}/{de.name}" if folder else de.name
            matched, deeper = match(rel) is not None, depth is None or rel.count("/") < depth
            if not (matched or deeper) or (not matched and de.is_file(follow_symlinks=False)):
                continue  # neither a match nor a folder on the way to one
            try:
                st = de.stat()  # follows links
            except OSError as e:
                if matched:
                    found.extend(_broken(rel, de.path, e))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if deeper and key in above:
                    found.append(_Entry(rel, de.path, "link_loop", detail=f"is a link to {os.path.realpath(de.path)}, "
                                        "a folder above it: following it would never end", blocked=True))
                    continue
                if matched:
                    found.append(_Entry(rel, de.path, "directory", detail=REFUSALS["directory"]))
                if deeper:
                    stack.append((rel, de.path, above | {key}))
            elif matched and stat.S_ISREG(st.st_mode):
                found.append(_Entry(rel, de.path, "file", st.st_size))
            elif matched:
                found.append(_Entry(rel, de.path, "special_file",
                                    detail=f"is {_kind_of(st.st_mode)}, not a regular file: nothing reads it"))
    return found


def _broken(rel: str, path: str, error: OSError) -> list[_Entry]:
    """A matched path whose stat failed: a dangling link, a link loop, or a file gone since listing (nothing)."""
    if error.errno == errno.ELOOP:
        return [_Entry(rel, path, "link_loop", detail="is a symbolic link whose chain of links never ends")]
    if isinstance(error, FileNotFoundError):
        if not os.path.islink(path):
            return []  # removed while the folder was listed
        return [_Entry(rel, path, "dangling_link",
                       detail=f"is a symbolic link to {os.readlink(path)}, which does not exist")]
    return [_Entry(rel, path, "unreadable", detail=f"cannot be examined ({error.strerror or error})")]


def _kind_of(mode: int) -> str:
    """What a path that is no regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def _list_store(root: str, pattern: str) -> list[_Entry]:
    """The keys under the pattern's literal prefix that it matches. Stores have no links or special
    files; a key ending in "/" (the folder marker some tools write) and every prefix of a key are
    directories, refused when matched like a local folder."""
    match = _matcher(pattern)
    where = f"{root}/{_literal_prefix(pattern)}**"
    try:
        (result,) = FileSystems.match([where])
    except Exception as e:  # Beam raises BeamIOError for unreachable stores and missing buckets
        raise SourceError(f"cannot list {root}/{pattern}: {e}") from e
    found, folders = [], set()
    for m in result.metadata_list:
        rel = m.path[len(root) + 1 :]
        parts = rel.rstrip("/").split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts) + rel.endswith("/")))
        if not rel.endswith("/") and match(rel):
            found.append(_Entry(rel, m.path, "file", m.size_in_bytes))
    found += [_Entry(f, f"{root}/{f}/", "directory", detail=REFUSALS["directory"]) for f in sorted(folders) if match(f)]
    return found


def _list_hub(root: str, pattern: str, spec: SourceSpec) -> list[_Entry]:
    """List a hub dataset through huggingface_hub (what `datasets` streams through); a hub repo has
    no links or special files, and its listing says which matches are directories."""
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
    found = []
    for path, info in sorted(hits.items()):
        rel = (_HUB_PREFIX + path)[len(root) + 1 :]
        if info.get("type") == "directory":
            found.append(_Entry(rel, _HUB_PREFIX + path, "directory", detail=REFUSALS["directory"]))
        else:
            found.append(_Entry(rel, _HUB_PREFIX + path, "file", info.get("size") or 0))
    return found


def open_source_file(path: str) -> BinaryIO:
    """Open raw bytes (no decompression: the format layer decompresses and detects truncation)."""
    if path.startswith(_HUB_PREFIX):
        from huggingface_hub import HfFileSystem

        return HfFileSystem().open(path[len(_HUB_PREFIX) :], "rb")
    return storage.open_read(path) if storage.is_remote(path) else _open_local(path)


def _open_local(path: str) -> BinaryIO:
    """Open a local file without blocking: a named pipe put in a listed file's place would hang an
    ordinary open forever; anything but a regular file is refused once open."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{_kind_of(mode)}, not a regular file", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")
