"""dedup/spill.py: records grouped by partition come back whole and in the order added, whether they
stayed in memory or went to disk; the folder is removed."""

import os

import numpy as np
import pytest

from pipeline.dedup.spill import MEMORY_ENV, Spill, memory_budget, partitions_for
from pipeline.errors import ConfigError

DTYPE = np.dtype([("key", "<u8"), ("value", "<i4")])


def _records(rng, n):
    r = np.empty(n, DTYPE)
    r["key"], r["value"] = rng.integers(0, 2**63, n, dtype=np.uint64), np.arange(n, dtype=np.int32)
    return r


def _collect(budget, batches, partitions=8):
    with Spill(DTYPE, partitions, budget) as spill:
        for r in batches:
            spill.add(r["key"] >> np.uint64(61), r)
        folder = spill._folder.name if spill._folder else None
        got = {i: r for i, r in spill.partitions()}
        spilled = spill.spilled
    assert folder is None or not os.path.exists(folder)
    return got, spilled


def test_partitions_come_back_in_the_order_added_from_memory_or_disk():
    rng = np.random.default_rng(0)
    batches = [_records(rng, n) for n in (100, 0, 37, 500, 1)]
    for b, offset in zip(batches, np.cumsum([0] + [len(b) for b in batches[:-1]])):
        b["value"] += offset  # a record's place in the whole input
    whole = np.concatenate(batches)
    in_memory, none = _collect(1 << 30, batches)
    # Past the budget every add is flushed, and the last (12 bytes, under it) before reading: once a
    # partition is on disk, reading holds one partition, not it and the buffer.
    on_disk, spilled = _collect(64, batches)
    assert none == 0 and spilled == whole.nbytes
    assert in_memory.keys() == on_disk.keys() == set(np.unique(whole["key"] >> np.uint64(61)).tolist())
    for i, r in in_memory.items():
        want = whole[(whole["key"] >> np.uint64(61)) == i]
        assert np.array_equal(r, want) and np.array_equal(on_disk[i], want)  # in the order added


def test_partition_counts_are_powers_of_two_that_fit_the_target():
    assert partitions_for(0, 40, 1000) == 1 and partitions_for(25, 40, 1000) == 1
    assert partitions_for(26, 40, 1000) == 2 and partitions_for(1000, 40, 1000) == 64
    assert partitions_for(2 * 10**9, 40, 256 << 20) == 512  # stage 1's candidates: ~150 MiB a partition


def test_the_memory_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    assert memory_budget() == 1024 << 20 and Spill(DTYPE, 1).budget == 512 << 20
    monkeypatch.setenv(MEMORY_ENV, "64")
    assert memory_budget() == 64 << 20 and Spill(DTYPE, 1).budget == 32 << 20
    for bad in ("", "1.5", "-3", "2"):
        monkeypatch.setenv(MEMORY_ENV, bad)
        with pytest.raises(ConfigError, match=MEMORY_ENV):
            memory_budget()
