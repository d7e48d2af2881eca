"""The trainer-side reader: a mixture's shards as one indexable, shuffleable list of samples.

Every entry of a mixture shard is one training sample of ``seq_len + 1`` tokens (inputs and the
shifted targets). Open one shard by prefix, or a folder of ``NAME-NNNNN-of-MMMMM.{bin,idx}`` shards::

    ds = MixtureDataset("out/stage1")            # seq_len inferred from the first sample, then checked
    ds[0]                                        # zero-copy numpy array of seq_len + 1 tokens
    for position, sample in ds.iter_samples(seed=1234, epoch=0, rank=r, world_size=8):
        ...

Shuffling and data parallelism, precisely:

* ``sample_order(epoch, seed)`` is a permutation of ``range(len(ds))`` drawn from
  ``np.random.Generator(np.random.PCG64([seed, epoch]))``: the same on every machine and numpy version
  that keeps PCG64 and ``Generator.permutation`` stable, and different for each epoch.
* Position ``p`` of that order (0-based, global across ranks) goes to rank ``p % world_size``: in each
  step of ``world_size`` positions every rank receives one sample.
* ``start`` is the number of positions of the epoch already consumed by all ranks together; a run
  resumed with the same ``world_size`` and ``start = samples_per_step * steps_done`` sees exactly the
  samples it would have seen without the interruption.

Only numpy is needed. :func:`TorchDataset` wraps a dataset for ``torch.utils.data.DataLoader`` (torch
is imported when it is called, and is not a dependency of mixprep).
"""

import functools
import json
import operator
import os
import re

import numpy as np

from pipeline.errors import FormatError
from pipeline.mmidx import MMIDXReader

__all__ = ["MixtureDataset", "TorchDataset"]

_SHARD_IDX = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.idx$")


def _shard_prefixes(folder: str) -> list:
    """Shard prefixes in a folder: manifest.json order if present, else name order; checked complete."""
    found = sorted(filter(None, map(_SHARD_IDX.match, os.listdir(folder))), key=lambda m: m.string)
    groups = {}
    for m in found:
        groups.setdefault((m["stem"], m["total"]), set()).add(int(m["index"]))
    for (stem, total), indices in sorted(groups.items()):
        if missing := sorted(set(range(int(total))) - indices):
            raise FormatError(
                f"{folder}: expected shards 00000..{int(total) - 1:05d} of {stem}-*-of-{total}, "
                f"found {len(indices)}; missing {', '.join(f'{i:05d}' for i in missing[:5])}"
            )
    names = [m.string[: -len(".idx")] for m in found]
    manifest = os.path.join(folder, "manifest.json")
    if not os.path.exists(manifest):
        if not names:
            raise FormatError(f"{folder}: expected *-NNNNN-of-MMMMM.idx shards, found none")
        return [os.path.join(folder, n) for n in names]
    try:
        with open(manifest) as f:
            listed = [entry["prefix"] for entry in json.load(f)["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FormatError(
            f"{manifest}: expected JSON with a \"shards\" list of {{\"prefix\": ...}} objects, "
            f"found an error: {e!r}"
        ) from e
    if len(listed) != len(names):
        raise FormatError(f"{manifest}: lists {len(listed)} shards, but {folder} holds {len(names)}")
    return [os.path.join(folder, p) for p in listed]


class MixtureDataset:
    """Fixed-length samples from one shard prefix or a folder of shards, indexed globally.

    Args:
      path: a shard prefix (``.../stage1-00000-of-00004``, a ``.bin``/``.idx`` suffix is ignored) or a
        folder of shards (ordered by its ``manifest.json`` if present, else by name).
      seq_len: expected sample length minus one; None infers it from the first sample. Either way every
        entry of every shard must have exactly ``seq_len + 1`` tokens.
    """

    def __init__(self, path, seq_len=None):
        self.path = os.fspath(path)
        self._requested_seq_len = seq_len
        if os.path.isdir(self.path):
            prefixes = _shard_prefixes(self.path)
        else:
            prefixes = [re.sub(r"\.(bin|idx)$", "", self.path)]
        self._shards = [MMIDXReader(p) for p in prefixes]
        counts = np.array([len(s) for s in self._shards], dtype=np.int64)
        # Shard k holds global samples [starts[k], starts[k+1]).
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self.seq_len = self._check_samples(seq_len)
        self.dtype = self._shards[0].dtype
        for shard in self._shards:
            if shard.dtype != self.dtype:
                raise FormatError(f"{shard.idx_path}: expected token dtype {self.dtype} (as in "
                                  f"{self._shards[0].idx_path}), found {shard.dtype}")
        self.num_tokens = len(self) * (self.seq_len + 1)

    def _check_samples(self, seq_len) -> int:
        if seq_len is None:
            first = next((s for s in self._shards if len(s)), None)
            if first is None:
                raise FormatError(f"{self.path}: expected samples to infer seq_len from, found none")
            seq_len = int(first.sequence_lengths[0]) - 1
            if seq_len < 1:
                raise FormatError(f"{first.idx_path}: expected samples of at least 2 tokens, "
                                  f"found {seq_len + 1} tokens in entry 0")
        elif seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        for shard in self._shards:
            if (bad := np.flatnonzero(shard.sequence_lengths != seq_len + 1)).size:
                i = int(bad[0])
                raise FormatError(
                    f"{shard.idx_path}: expected every entry to be one sample of seq_len + 1 = "
                    f"{seq_len + 1} tokens, found {shard.sequence_lengths[i]} tokens in entry {i}"
                    f" ({bad.size} such entries) — is this a packed mixture shard?"
                )
        return seq_len

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i) -> np.ndarray:
        i, n = operator.index(i), len(self)
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples in {self.path}")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1  # skips empty shards
        return self._shards[k][i - int(self._starts[k])]

    def sample_order(self, epoch: int, seed: int) -> np.ndarray:
        """The epoch's permutation of sample indices, from PCG64 seeded with ``[seed, epoch]``."""
        return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(len(self))

    def iter_samples(self, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                     start: int = 0):
        """Yield ``(position, sample)`` for this rank: positions ``p >= start`` with ``p % world_size ==
        rank`` of ``sample_order(epoch, seed)``, in increasing order (see the module docstring)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}], got {start}")
        order = self.sample_order(epoch, seed)
        for p in range(start + (rank - start) % world_size, len(self), world_size):
            yield p, self[order[p]]

    def close(self) -> None:
        for shard in self._shards:
            shard.close()

    def __reduce__(self):
        # Memory maps do not pickle; DataLoader workers (spawn) reopen the files instead.
        return (MixtureDataset, (self.path, self._requested_seq_len))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def TorchDataset(dataset, seq_len=None):  # noqa: N802 - named for what it returns
    """A ``torch.utils.data.Dataset`` over a MixtureDataset (or a path) yielding int64 tensors.

    >>> loader = torch.utils.data.DataLoader(TorchDataset("out/stage1"), batch_size=8)  # doctest: +SKIP
    """
    if not isinstance(dataset, MixtureDataset):
        dataset = MixtureDataset(dataset, seq_len)
    return _torch_dataset_class()(dataset)


@functools.lru_cache(maxsize=None)
def _torch_dataset_class():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "TorchDataset needs PyTorch, which mixprep does not install: `pip install torch` in the "
            "trainer's environment, or use MixtureDataset directly (numpy only)"
        ) from e

    class _TorchMixtureDataset(torch.utils.data.Dataset):
        def __init__(self, dataset):
            self.dataset = dataset

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, i):
            return torch.from_numpy(self.dataset[i].astype(np.int64))

    _TorchMixtureDataset.__qualname__ = "_TorchMixtureDataset"
    _TorchMixtureDataset.__module__ = __name__
    return _TorchMixtureDataset


def __getattr__(name):
    # Lets pickle find the lazily built class (DataLoader workers started with spawn).
    if name == "_TorchMixtureDataset":
        return _torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
