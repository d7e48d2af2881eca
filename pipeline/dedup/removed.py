"""The documents a resolution removed, kept in files beside the shards while the run lasts.

A resolution (``mix/dedup.py``) writes, in its folder ``OUT/_dedup/<resolution id>/``::

    removed-QQQQQ.rec   removal records (``REMOVAL``), sorted by (removed source, part, row); each file
                        holds a contiguous range of (source, part)
    index.json          written last: the resolution's rule, counts and digest, and per source and
                        cache part where its records are ([file, first record, count])

``Removed`` is one source's view of them: what every pass over a cache part leaves out
(``TokenCache.without``, ``mix.select.doc_buckets``). It pickles as four small values, so a pack step
carries no removal list: each step reads the rows of the cache part it works on, and only those.
"""

from __future__ import annotations

import numpy as np

from .. import storage
from ..storage import read_json

__all__ = ["REMOVAL", "INDEX_FILE", "Removed", "index_path", "read_records", "records_path"]

# One removed document: where it is, its tokens, the document kept in its place and the kind (clusters.KINDS).
REMOVAL = np.dtype([("removed_source", "<u2"), ("removed_part", "<u4"), ("removed_row", "<u4"), ("n_tokens", "<i8"),
                    ("kept_source", "<u2"), ("kept_part", "<u4"), ("kept_row", "<u4"), ("kind", "u1")])
INDEX_FILE = "index.json"


def index_path(folder: str) -> str:
    return storage.join(folder, INDEX_FILE)


def records_path(folder: str, file: int) -> str:
    return storage.join(folder, f"removed-{file:05d}.rec")


def read_records(folder: str, file: int, first: int = 0, count: int | None = None) -> np.ndarray:
    """Records ``first : first + count`` of one records file (all of it when ``count`` is None)."""
    path = records_path(folder, file)
    if count is None:
        with storage.open_read(path) as f:
            data = f.read()
    else:
        data = b"".join(storage.read_range(path, first * REMOVAL.itemsize, count * REMOVAL.itemsize))
    return np.frombuffer(data, dtype=REMOVAL)


class Removed:
    """One source's removed rows, per cache part, read from a resolution's folder when first asked."""

    __slots__ = ("folder", "source", "count", "digest", "_where", "_last")

    def __init__(self, folder: str, source: str, count: int, digest: str):
        self.folder, self.source, self.count, self.digest = folder, source, int(count), digest
        self._where: dict[int, tuple[int, int, int]] | None = None  # part -> (file, first, count)
        self._last: tuple[int, np.ndarray] | None = None  # the part read last: passes go part by part

    def __len__(self) -> int:
        return self.count

    def __getstate__(self):
        return self.folder, self.source, self.count, self.digest

    def __setstate__(self, state):
        self.folder, self.source, self.count, self.digest = state
        self._where = self._last = None

    def __eq__(self, other) -> bool:  # a Packing compares equal when it removes the same documents
        return isinstance(other, Removed) and (self.source, self.digest) == (other.source, other.digest)

    def __hash__(self) -> int:
        return hash((self.source, self.digest))

    def rows_of(self, part: int) -> np.ndarray:
        """The removed rows of one cache part, sorted."""
        if self._last is not None and self._last[0] == part:
            return self._last[1]
        if self._where is None:
            parts = read_json(index_path(self.folder))["parts"].get(self.source, {})
            self._where = {int(p): tuple(where) for p, where in parts.items()}
        where = self._where.get(part)
        rows = np.empty(0, np.uint32) if where is None else \
            read_records(self.folder, *where)["removed_row"].astype(np.uint32)
        self._last = (part, rows)
        return rows

    def mask(self, part: int, n: int) -> np.ndarray:
        """A bool mask over a part's ``n`` documents: True where removed."""
        out = np.zeros(n, dtype=bool)
        out[self.rows_of(part)] = True
        return out
