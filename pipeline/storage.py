"""Small file helpers shared by every writer: atomic writes and JSON documents.

A file appears under its final name only when complete: written to a temporary name in the same
folder, then renamed (``os.replace`` is atomic on POSIX filesystems).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any, Iterator

from .errors import OutputError

__all__ = ["atomic_writer", "write_json", "read_json", "temp_name", "remove_temporaries", "make_dirs"]


_TEMP_MARK = ".tmp-"


def temp_name(path: str) -> str:
    return f"{path}{_TEMP_MARK}{secrets.token_hex(6)}"


def remove_temporaries(folder: str) -> int:
    """Delete temporary files a crashed writer left in ``folder`` (and below); returns how many."""
    removed = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if _TEMP_MARK in name:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(dirpath, name))
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file; on success rename it to ``path``, on error delete it."""
    tmp = temp_name(path)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        f = open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {}))
    except OSError as e:
        raise OutputError(path, e) from e
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise OutputError(path, e) from e
        raise


def write_json(path: str, obj: Any) -> None:
    """Write canonical JSON (sorted keys, 1-space indent, trailing newline) atomically."""
    with atomic_writer(path, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def make_dirs(path: str) -> None:
    """Create an output folder, or say clearly why it cannot be."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OutputError(path, e) from e
