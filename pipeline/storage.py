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

__all__ = ["atomic_writer", "write_json", "read_json", "temp_name"]


def temp_name(path: str) -> str:
    return f"{path}.tmp-{secrets.token_hex(6)}"


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file; on success rename it to ``path``, on error delete it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_name(path)
    f = open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {}))
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    """Write canonical JSON (sorted keys, 1-space indent, trailing newline) atomically."""
    with atomic_writer(path, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
