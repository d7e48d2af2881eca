"""pipeline.dataset: global indexing over shards, seeded epochs, rank splits and resumption."""

import importlib.util
import json
import os
import pickle

import numpy as np
import pytest

from pipeline.dataset import MixtureDataset, TorchDataset
from pipeline.errors import FormatError
from pipeline.mmidx import MMIDXWriter

SEQ_LEN = 8
COUNTS = [7, 5, 9]


def make_shards(folder, counts=COUNTS, seq_len=SEQ_LEN, stem="stage1", bad=None):
    """Write ``len(counts)`` shards of random samples; ``bad=(shard, entry)`` makes one entry short."""
    rng = np.random.default_rng(0)
    prefixes = []
    for k, count in enumerate(counts):
        prefix = os.path.join(folder, f"{stem}-{k:05d}-of-{len(counts):05d}")
        with MMIDXWriter(prefix, np.uint16) as w:
            for i in range(count):
                w.add(rng.integers(0, 50000, seq_len + 1 - (2 if (k, i) == bad else 0)))
        prefixes.append(prefix)
    return prefixes


def prefixes_in(folder):
    names = sorted(n[: -len(".idx")] for n in os.listdir(folder) if n.endswith(".idx"))
    return [os.path.join(folder, n) for n in names]


def plain_read(prefixes, seq_len=SEQ_LEN):
    """All samples, by reading the .bin files with numpy alone."""
    return np.concatenate(
        [np.fromfile(p + ".bin", dtype=np.uint16).reshape(-1, seq_len + 1) for p in prefixes]
    )


@pytest.fixture
def folder(tmp_path):
    make_shards(tmp_path)
    return str(tmp_path)


def test_global_indexing_matches_plain_read(folder):
    expected = plain_read(prefixes_in(folder))
    ds = MixtureDataset(folder)
    assert len(ds) == sum(COUNTS) == len(expected)
    assert ds.seq_len == SEQ_LEN and ds.num_tokens == expected.size and ds.dtype == np.uint16
    for i in range(len(ds)):
        assert np.array_equal(ds[i], expected[i])
    assert np.array_equal(ds[-1], expected[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_single_prefix_and_explicit_seq_len(folder):
    prefix = os.path.join(folder, "stage1-00001-of-00003")
    ds = MixtureDataset(prefix, seq_len=SEQ_LEN)
    assert len(ds) == COUNTS[1]
    assert np.array_equal(ds[0], plain_read([prefix])[0])
    assert len(MixtureDataset(prefix + ".idx")) == COUNTS[1]


def test_empty_shard_is_skipped(tmp_path):
    prefixes = make_shards(tmp_path, counts=[3, 0, 4])
    ds = MixtureDataset(tmp_path)
    expected = plain_read(prefixes)
    assert [ds[i].tolist() for i in range(len(ds))] == expected.tolist()


def test_sample_order(folder):
    ds = MixtureDataset(folder)
    order = ds.sample_order(epoch=0, seed=3)
    assert sorted(order.tolist()) == list(range(len(ds)))
    assert np.array_equal(order, ds.sample_order(epoch=0, seed=3))
    assert not np.array_equal(order, ds.sample_order(epoch=1, seed=3))
    assert not np.array_equal(order, ds.sample_order(epoch=0, seed=4))
    expected = np.random.Generator(np.random.PCG64([3, 0])).permutation(len(ds))
    assert np.array_equal(order, expected)  # the documented recipe, so a trainer can reproduce it


def test_ranks_split_the_epoch_exactly(folder):
    ds = MixtureDataset(folder)
    order = ds.sample_order(epoch=2, seed=7)
    world = 4
    seen = {}
    for rank in range(world):
        for p, sample in ds.iter_samples(seed=7, epoch=2, rank=rank, world_size=world):
            assert p % world == rank and p not in seen
            assert np.array_equal(sample, ds[order[p]])
            seen[p] = rank
    assert sorted(seen) == list(range(len(ds)))


@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("k", [0, 1, 5, 20, 21])
def test_resume_equals_tail_of_full_iteration(folder, world, k):
    ds = MixtureDataset(folder)
    for rank in range(world):
        full = list(ds.iter_samples(seed=1, epoch=0, rank=rank, world_size=world))
        resumed = list(ds.iter_samples(seed=1, epoch=0, rank=rank, world_size=world, start=k))
        tail = [(p, s) for p, s in full if p >= k]
        assert [p for p, _ in resumed] == [p for p, _ in tail]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(resumed, tail))


def test_iter_samples_rejects_bad_arguments(folder):
    ds = MixtureDataset(folder)
    with pytest.raises(ValueError):
        next(ds.iter_samples(rank=2, world_size=2))
    with pytest.raises(ValueError):
        next(ds.iter_samples(start=len(ds) + 1))


def test_non_uniform_entry_names_the_shard(tmp_path):
    make_shards(tmp_path, bad=(2, 3))
    with pytest.raises(FormatError) as e:
        MixtureDataset(tmp_path)
    msg = str(e.value)
    assert "stage1-00002-of-00003.idx" in msg and "entry 3" in msg and f"{SEQ_LEN + 1} tokens" in msg


def test_explicit_seq_len_mismatch(folder):
    with pytest.raises(FormatError, match="stage1-00000-of-00003.idx.*entry 0"):
        MixtureDataset(folder, seq_len=SEQ_LEN + 1)


def test_manifest_order_is_honoured(folder):
    prefixes = prefixes_in(folder)
    names = [os.path.basename(p) for p in reversed(prefixes)]
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"shards": [{"prefix": n} for n in names]}, f)
    ds = MixtureDataset(folder)
    expected = plain_read(prefixes[::-1])
    assert [ds[i].tolist() for i in range(len(ds))] == expected.tolist()


def test_manifest_count_must_match(folder):
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"shards": [{"prefix": "stage1-00000-of-00003"}]}, f)
    with pytest.raises(FormatError, match="manifest.json: lists 1 shards, but .* holds 3"):
        MixtureDataset(folder)


def test_missing_shard_is_reported(folder):
    for ext in (".bin", ".idx"):
        os.remove(os.path.join(folder, "stage1-00001-of-00003" + ext))
    with pytest.raises(FormatError, match="missing 00001"):
        MixtureDataset(folder)


def test_empty_folder(tmp_path):
    with pytest.raises(FormatError, match="found none"):
        MixtureDataset(tmp_path)


def test_pickles_by_reopening(folder):
    ds = MixtureDataset(folder)
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and np.array_equal(copy[5], ds[5])


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_torch_adapter_without_torch(folder):
    with pytest.raises(ImportError, match="pip install torch"):
        TorchDataset(folder)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_adapter(folder):
    import torch

    ds = TorchDataset(folder)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == sum(COUNTS)
    assert ds[0].dtype == torch.int64 and ds[0].tolist() == MixtureDataset(folder)[0].tolist()
    assert pickle.loads(pickle.dumps(ds))[1].tolist() == ds[1].tolist()
