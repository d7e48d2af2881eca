"""One source's documents removed as duplicates, as (part, row) arrays: what the plan and the pack
stage leave out (``TokenCache.without``). Numpy only, 8 bytes per removed document, pickled with the
pack stage's ``Packing``."""

from __future__ import annotations

import numpy as np

__all__ = ["Removed"]


class Removed:
    """Rows removed from a source's cache parts, sorted by (part, row)."""

    __slots__ = ("parts", "rows")

    def __init__(self, parts: np.ndarray, rows: np.ndarray):
        parts, rows = np.asarray(parts, np.uint32), np.asarray(rows, np.uint32)
        order = np.lexsort((rows, parts))
        self.parts, self.rows = parts[order], rows[order]

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):
        return self.parts, self.rows

    def __setstate__(self, state):
        self.parts, self.rows = state

    def __eq__(self, other) -> bool:  # a Packing compares equal when it removes the same documents
        return isinstance(other, Removed) and np.array_equal(self.parts, other.parts) \
            and np.array_equal(self.rows, other.rows)

    def __hash__(self) -> int:  # never changed after construction (a Packing, frozen, may be hashed)
        return hash((self.parts.tobytes(), self.rows.tobytes()))

    def rows_of(self, part: int) -> np.ndarray:
        """The removed rows of one cache part, sorted."""
        lo, hi = np.searchsorted(self.parts, [part, part + 1])
        return self.rows[lo:hi]

    def mask(self, part: int, n: int) -> np.ndarray:
        """A bool mask over a part's ``n`` documents: True where removed."""
        out = np.zeros(n, dtype=bool)
        out[self.rows_of(part)] = True
        return out
