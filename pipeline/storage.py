"""Where every output byte goes: local paths or any Beam filesystem (gs://, s3://), one small API.

A file appears under its final name only when complete: written to a temporary name in the same
folder, then renamed. Locally ``os.replace`` is atomic; on object stores Beam's rename is a copy of a
finished object, so a reader never sees a partial one there either. Local paths keep plain ``open``
(and memory-mapping, for readers); URIs go through ``apache_beam.io.filesystems.FileSystems``, imported
on the first URI: a trainer reading local shards (``pipeline.dataset``) needs numpy alone.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
from typing import Any, BinaryIO, Iterator

from .errors import OutputError

__all__ = [
    "atomic_writer",
    "delete",
    "exists",
    "is_remote",
    "join",
    "list_files",
    "make_dirs",
    "open_read",
    "open_write",
    "read_json",
    "remove_temporaries",
    "rename",
    "temp_name",
    "write_json",
]

_TEMP_MARK = ".tmp-"


def _share_botocore_data_loader() -> None:
    """Give every botocore session of this process one data loader.

    Beam's S3 filesystem makes a new boto3 session for every call (exists, open, rename, ...), and
    each new session parses botocore's service-model JSON from disk again: ~0.2 s a call, measured,
    90% of an S3 dry run. The models are read-only data, so one loader (which caches them) per
    ``data_path`` serves every session.
    """
    try:
        import botocore.loaders
        import botocore.session
    except ImportError:
        return
    if getattr(botocore.session.Session, "_mixprep_shared_loader", False):
        return
    loaders: dict = {}

    def register(session) -> None:
        def loader():
            data_path = session.get_config_variable("data_path")
            if data_path not in loaders:
                loaders[data_path] = botocore.loaders.create_loader(data_path)
            return loaders[data_path]

        session._components.lazy_register_component("data_loader", loader)

    botocore.session.Session._register_data_loader = register
    botocore.session.Session._mixprep_shared_loader = True


def _filesystems():
    """Beam's ``FileSystems``, imported when a URI is first used (Beam is heavy, and absent for trainers)."""
    from apache_beam.io.filesystems import FileSystems

    _share_botocore_data_loader()  # idempotent; only Beam's S3 filesystem makes the sessions it helps
    return FileSystems


def _uncompressed():
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(path: str) -> bool:
    """True for a URI (gs://, s3://, ...), False for a local path."""
    return _URI.match(path) is not None


def join(base: str, *parts: str) -> str:
    """Join path parts; URIs join with "/" (no filesystem needed just to name a file)."""
    if not is_remote(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(path: str) -> bool:
    return _filesystems().exists(path) if is_remote(path) else os.path.exists(path)


def open_read(path: str) -> BinaryIO:
    if is_remote(path):
        return _filesystems().open(path, compression_type=_uncompressed())
    return open(path, "rb")


def read_range(path: str, offset: int, size: int, chunk: int = 8 << 20) -> Iterator[bytes]:
    """Bytes ``offset : offset + size`` of a file, ``chunk`` bytes at a time; raises EOFError if the
    file ends first. Remote files are read past Beam's buffered reader: it fills 16 MiB (S3) at a
    time, so a small range read through it transferred up to 16 MiB."""
    end = offset + size
    with open_read(path) as f:
        raw = getattr(f, "raw", f) if is_remote(path) else f
        raw.seek(offset)
        while size > 0:
            data = raw.read(min(size, chunk))
            if not data:
                raise EOFError(f"{path}: the file ends {size} bytes short of the range [{offset}, {end})")
            yield data
            size -= len(data)


def open_write(path: str) -> BinaryIO:
    """A new file for writing bytes (remote: an object that appears when closed)."""
    if is_remote(path):
        return _filesystems().create(path, mime_type="application/octet-stream",
                                      compression_type=_uncompressed())
    return open(path, "wb")


def list_files(folder: str, pattern: str) -> list[str]:
    """Paths of the files directly in ``folder`` whose names match the glob ``pattern``."""
    if is_remote(folder):
        (match,) = _filesystems().match([join(folder, pattern)])
        return sorted(m.path for m in match.metadata_list)
    return sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))


def rename(src: str, dst: str) -> None:
    if is_remote(src):
        _filesystems().rename([src], [dst])
    else:
        os.replace(src, dst)


def delete(path: str) -> None:
    """Delete a file if it exists."""
    if is_remote(path):
        with contextlib.suppress(Exception):  # Beam raises BeamIOError for a missing object
            _filesystems().delete([path])
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def delete_tree(folder: str, first: str | None = None) -> None:
    """Delete ``folder`` and every file under it; the file named ``first`` goes before the others."""
    if first:
        delete(join(folder, first))
    if is_remote(folder):
        (match,) = _filesystems().match([join(folder, "**")])
        if match.metadata_list:
            _filesystems().delete([m.path for m in match.metadata_list])
    else:
        shutil.rmtree(folder, ignore_errors=True)


def make_dirs(path: str) -> None:
    """Create an output folder (object stores have none to create), or say clearly why it cannot be."""
    if is_remote(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OutputError(path, e) from e


def temp_name(path: str) -> str:
    return f"{path}{_TEMP_MARK}{secrets.token_hex(6)}"


def remove_temporaries(folder: str) -> int:
    """Delete temporary files a crashed writer left in ``folder`` (and below); returns how many."""
    if is_remote(folder):
        (match,) = _filesystems().match([join(folder, "**")])
        stale = [m.path for m in match.metadata_list if _TEMP_MARK in m.path.rsplit("/", 1)[-1]]
    else:
        stale = [os.path.join(d, n) for d, _, files in os.walk(folder) for n in files if _TEMP_MARK in n]
    for path in stale:
        delete(path)
    return len(stale)


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file; on success rename it to ``path``, on error delete it.

    ``mode`` is "wb" (bytes) or "w" (UTF-8 text).
    """
    tmp = temp_name(path)
    try:
        if not is_remote(path):
            make_dirs(os.path.dirname(path) or ".")
        raw = open_write(tmp)
    except OSError as e:
        raise OutputError(path, e) from e
    f = raw if "b" in mode else _TextWriter(raw)
    try:
        yield f
        if not is_remote(path):
            raw.flush()
            os.fsync(raw.fileno())
        raw.close()
        rename(tmp, path)
    except BaseException as e:
        with contextlib.suppress(Exception):
            raw.close()
        delete(tmp)
        if isinstance(e, OSError):
            raise OutputError(path, e) from e
        raise


class _TextWriter:
    """UTF-8 text on top of a binary file (Beam's remote files are binary only)."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw

    def write(self, text: str) -> int:
        return self._raw.write(text.encode("utf-8"))


def write_json(path: str, obj: Any) -> None:
    """Write canonical JSON (sorted keys, 1-space indent, trailing newline) atomically."""
    with atomic_writer(path, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str) -> Any:
    with open_read(path) as f:
        return json.loads(f.read().decode("utf-8"))
