"""Records grouped into partitions, held in memory up to a budget and on local disk past it.

    with Spill(dtype, partitions) as spill:
        spill.add(partition_of_each, records)      # any number of times
        for i, records in spill.partitions():      # each partition's records, in the order added
            ...

How exact dedup resolves billions of candidate documents on one machine with bounded memory
(``mix/dedup.py``): the records of a partition are read back one partition at a time, so the peak is
the buffer budget plus the largest partition, whatever the total (``memory_budget``). The files live in
a temporary folder of the local disk (``TMPDIR``), removed on exit.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np

from ..errors import ConfigError

__all__ = ["Spill", "BUFFER_BYTES", "MEMORY_ENV", "memory_budget", "partitions_for"]

MEMORY_ENV = "MIXPREP_DEDUP_MEMORY_MB"


def memory_budget() -> int:
    """Bytes a dedup resolution may hold (``MIXPREP_DEDUP_MEMORY_MB``, default 1024 MiB): half for the
    buffer, an eighth for a partition's records (resolving them takes ~2.7x that)."""
    value = os.environ.get(MEMORY_ENV, "1024")
    if not value.isdigit() or int(value) < 4:
        raise ConfigError(f"{MEMORY_ENV}={value!r}: give a whole number of MiB, at least 4 (default 1024).")
    return int(value) << 20


# Records held in memory before they are appended to the partitions' files (None: half the budget).
BUFFER_BYTES: int | None = None


class Spill:
    """``partitions`` groups of structured records (``dtype``)."""

    def __init__(self, dtype, partitions: int, budget: int | None = None):
        self.dtype, self.count = np.dtype(dtype), int(partitions)
        self.budget = budget if budget is not None else BUFFER_BYTES or memory_budget() // 2
        self._buffers: list[list[np.ndarray]] = [[] for _ in range(self.count)]
        self._buffered = 0
        self._folder: tempfile.TemporaryDirectory | None = None  # made on the first flush
        self.spilled = 0  # bytes written to disk

    def __enter__(self) -> "Spill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def add(self, partition: np.ndarray, records: np.ndarray) -> None:
        """Add ``records[i]`` to partition ``partition[i]``."""
        if not len(records):
            return
        order = np.argsort(partition, kind="stable")
        part, records = np.asarray(partition).astype(np.int64)[order], records[order]
        bounds = np.searchsorted(part, np.arange(self.count + 1))
        for i in np.flatnonzero(np.diff(bounds)).tolist():
            self._buffers[i].append(records[bounds[i]:bounds[i + 1]])
        self._buffered += records.nbytes
        if self._buffered > self.budget:
            self._flush()

    def _path(self, i: int) -> str:
        return os.path.join(self._folder.name, f"{i:06d}.rec")

    def _flush(self) -> None:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="mixprep-spill-")
        for i, chunks in enumerate(self._buffers):
            if chunks:
                with open(self._path(i), "ab") as f:
                    for chunk in chunks:
                        f.write(chunk.tobytes())
                self._buffers[i] = []
        self.spilled += self._buffered
        self._buffered = 0

    def partitions(self) -> Iterator[tuple[int, np.ndarray]]:
        """Each non-empty partition's records, in the order they were added (its file held the first)."""
        if self._folder is not None:
            self._flush()  # nothing stays buffered: the peak is one partition, not it and the buffer
        for i in range(self.count):
            chunks, self._buffers[i] = self._buffers[i], []
            if self._folder is not None and os.path.exists(self._path(i)):
                chunks.insert(0, np.fromfile(self._path(i), dtype=self.dtype))
                os.remove(self._path(i))
            if chunks:
                records = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
                del chunks
                yield i, records


def partitions_for(records: int, itemsize: int, target: int) -> int:
    """A power of two of partitions so that ``records`` spread evenly hold ~``target`` bytes each."""
    need = max(1, -(-records * itemsize // target))
    return 1 << (need - 1).bit_length()
