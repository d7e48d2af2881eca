"""The trainer-side reader: a mixture's shards as samples, rank splits that resume, and batches.

Every entry of a mixture shard is one training sample of ``seq_len + 1`` tokens (inputs and the
shifted targets). Only numpy is needed: importing this module loads neither Apache Beam nor pyarrow,
so a trainer's environment can use it as is. A PyTorch data-parallel loop::

    ds = MixtureDataset("out/stage1")                 # a folder of shards (or one shard prefix)
    sampler = MixtureSampler(len(ds), seed=1234, rank=rank, world_size=world, batch_size=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=sampler,
                                         collate_fn=TorchCollate(ds.eos_id, reset_position_ids=True))
    while step < max_steps:
        for batch in loader:                          # one pass = the rest of the current epoch
            loss = model(batch["tokens"], batch["position_ids"]) ...  # labels, loss_mask too
            checkpoint = {"model": ..., "data": sampler.state_dict()}  # after the optimizer step
    sampler.load_state_dict(checkpoint["data"])       # resumes at the same sample, any world size

Shuffling and data parallelism, precisely:

* The global order of epoch ``e`` is ``np.random.Generator(np.random.PCG64([seed, e])).permutation(N)``
  (``MixtureDataset.sample_order``): the same on every machine, whatever the world size.
* A step takes ``world_size * batch_size`` consecutive positions of that order. After ``consumed``
  positions, rank ``r`` takes positions ``consumed + r``, ``consumed + r + world_size``, ...: batch
  ``b`` of a step is the ranks' ``b``-th picks.
* Every rank gets the same number of samples, so every rank runs the same number of steps (a DDP job
  whose last step misses one rank hangs). ``drop_last=True`` (the default, like torch's
  ``DistributedSampler``) ends the epoch at its last full step: the last ``N % (world_size *
  batch_size)`` positions are skipped this epoch (the next epoch's permutation places them elsewhere).
  ``drop_last=False`` completes the last step with positions ``N, N + 1, ...`` that repeat the epoch's
  first samples (``order[p % N]``).
* ``state_dict()`` records the epoch and the global positions consumed; taken between steps, it
  resumes exactly, also with another world size or batch size (the rest of the epoch is then split
  the new way). A pass that reaches the end of its epoch rolls over: the next pass (and the state
  saved after it) is the next epoch, with a new permutation.
* The sampler counts the indices it hands out. ``DataLoader(num_workers=0)`` draws them as batches are
  used; with workers it draws ``num_workers * prefetch_factor`` batches ahead, which a checkpoint
  would count as consumed. Reading a sample is a slice of a memory map, so ``num_workers=0`` is cheap.

Batches (:func:`make_batch`, or :class:`Collate` / :class:`TorchCollate` as a ``collate_fn``):
``tokens = sample[:-1]`` and ``labels = sample[1:]`` (int64 ``[B, seq_len]``), ``loss_mask`` (float32,
1.0) and ``position_ids`` (``0..seq_len-1``). With the EOS id (``MixtureDataset.eos_id``, from the
manifest's tokenizer), Megatron's ``get_ltor_masks_and_position_ids`` options, where a document ends
with its EOS token and the next one starts right after it:

* ``eod_mask_loss``: ``loss_mask`` is 0.0 where the input token is EOS (the prediction across a
  document boundary);
* ``reset_position_ids``: positions restart at 0 after each EOS;
* ``reset_attention_mask``: adds ``attention_mask``, bool ``[B, 1, S, S]``, **True where attention is
  blocked** (Megatron's convention; ``torch.nn.functional.scaled_dot_product_attention`` wants
  ``~attention_mask``): query ``i`` may see key ``j`` only if ``j <= i`` and no EOS lies in
  ``tokens[j:i]``.
"""

import dataclasses
import functools
import json
import operator
import os
import re

import numpy as np

from pipeline.errors import FormatError
from pipeline.layout import manifest_path, parse_shard_name, shard_prefix
from pipeline.mmidx import MMIDXReader

__all__ = ["MixtureDataset", "MixtureSampler", "make_batch", "Collate", "TorchCollate", "TorchDataset"]


def _read_manifest(folder: str):
    """The folder's manifest.json as a dict, or None if it has none."""
    path = manifest_path(folder)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: expected a JSON manifest, found an error: {e!r}") from e
    if not isinstance(manifest, dict):
        raise FormatError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    return manifest


def _shard_prefixes(folder: str, manifest) -> list:
    """Shard prefixes in a folder: manifest order if there is one, else name order; checked complete."""
    names = [f[: -len(".idx")] for f in sorted(os.listdir(folder))
             if f.endswith(".idx") and parse_shard_name(f[: -len(".idx")])]
    groups = {}
    for stem, index, total in map(parse_shard_name, names):
        groups.setdefault((stem, total), set()).add(index)
    for (stem, total), indices in sorted(groups.items()):
        if missing := sorted(set(range(total)) - indices):
            raise FormatError(
                f"{folder}: expected shards 00000..{total - 1:05d} of {stem}-*-of-{total:05d}, "
                f"found {len(indices)}; missing {', '.join(f'{i:05d}' for i in missing[:5])}"
            )
    if manifest is None:
        if not names:
            raise FormatError(f"{folder}: expected *-NNNNN-of-MMMMM.idx shards, found none")
        return [shard_prefix(folder, n) for n in names]
    path = manifest_path(folder)
    try:
        listed = [entry["prefix"] for entry in manifest["shards"]]
    except (KeyError, TypeError) as e:
        raise FormatError(
            f"{path}: expected JSON with a \"shards\" list of {{\"prefix\": ...}} objects, "
            f"found an error: {e!r}"
        ) from e
    if len(listed) != len(names):
        raise FormatError(f"{path}: lists {len(listed)} shards, but {folder} holds {len(names)}")
    return [shard_prefix(folder, p) for p in listed]


def _eos_id(manifest):
    """The tokenizer's EOS id a manifest records, or None (no manifest, or one without it)."""
    eos = ((manifest or {}).get("tokenizer") or {}).get("eos_id")
    return None if eos is None else int(eos)


class MixtureDataset:
    """Fixed-length samples from one shard prefix or a folder of shards, indexed globally.

    Args:
      path: a shard prefix (``.../stage1-00000-of-00004``, a ``.bin``/``.idx`` suffix is ignored) or a
        folder of shards (ordered by its ``manifest.json`` if present, else by name).
      seq_len: expected sample length minus one; None infers it from the first sample. Either way every
        entry of every shard must have exactly ``seq_len + 1`` tokens.

    ``eos_id`` is the tokenizer's EOS id from the ``manifest.json`` beside the shards (None without one).

    >>> ds = MixtureDataset("out/stage1")  # doctest: +SKIP
    >>> ds[0].shape, ds.seq_len, ds.eos_id  # doctest: +SKIP
    ((2049,), 2048, 0)
    """

    def __init__(self, path, seq_len=None):
        self.path = os.fspath(path)
        self._requested_seq_len = seq_len
        if os.path.isdir(self.path):
            manifest = _read_manifest(self.path)
            prefixes = _shard_prefixes(self.path, manifest)
        else:
            prefixes = [re.sub(r"\.(bin|idx)$", "", self.path)]
            manifest = _read_manifest(os.path.dirname(prefixes[0]) or ".")
        self.eos_id = _eos_id(manifest)
        if manifest and manifest.get("layout", "samples") != "samples":
            raise FormatError(f"{self.path}: a `layout: {manifest['layout']}` mixture: its entries are whole "
                              "documents, not samples of one length. Train on it with Megatron-LM (megatron-args.txt "
                              "beside the shards), or build the mixture with `layout: samples` for this reader.")
        self._readers = [MMIDXReader(p) for p in prefixes]
        counts = np.array([len(s) for s in self._readers], dtype=np.int64)
        # Shard k holds global samples [starts[k], starts[k+1]).
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self.seq_len = self._check_samples(seq_len)
        self.dtype = self._readers[0].dtype
        for shard in self._readers:
            if shard.dtype != self.dtype:
                raise FormatError(f"{shard.idx_path}: expected token dtype {self.dtype} (as in "
                                  f"{self._readers[0].idx_path}), found {shard.dtype}")
        self.num_tokens = len(self) * (self.seq_len + 1)

    def _check_samples(self, seq_len) -> int:
        if seq_len is None:
            first = next((s for s in self._readers if len(s)), None)
            if first is None:
                raise FormatError(f"{self.path}: expected samples to infer seq_len from, found none")
            seq_len = int(first.sequence_lengths[0]) - 1
            if seq_len < 1:
                raise FormatError(f"{first.idx_path}: expected samples of at least 2 tokens, "
                                  f"found {seq_len + 1} tokens in entry 0")
        elif seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        for shard in self._readers:
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
        return self._readers[k][i - int(self._starts[k])]

    def sample_order(self, epoch: int, seed: int) -> np.ndarray:
        """The epoch's permutation of sample indices, from PCG64 seeded with ``[seed, epoch]``."""
        return _sample_order(len(self), seed, epoch)

    def iter_samples(self, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                     start: int = 0, drop_last: bool = True):
        """Yield ``(position, sample)`` for this rank from global position ``start`` of the epoch on.

        The positions are a :class:`MixtureSampler`'s (batch size 1): ``start + rank``,
        ``start + rank + world_size``, ..., the same count on every rank (see the module docstring).
        A resumed run passes ``start = world_size * samples_per_rank_done``.
        """
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}], got {start}")
        sampler = MixtureSampler(len(self), seed, rank, world_size, drop_last=drop_last)
        for p, i in sampler._positions(epoch, start):
            yield p, self[i]

    def close(self) -> None:
        for shard in self._readers:
            shard.close()

    def __reduce__(self):
        # Memory maps do not pickle; DataLoader workers (spawn) reopen the files instead.
        return (MixtureDataset, (self.path, self._requested_seq_len))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _sample_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """``Generator(PCG64([seed, epoch])).permutation(n)``, as uint32 below 2**32 samples.

    Shuffling an arange gives the same permutation in any dtype; uint32 halves it (1.9 GB, not 3.9 GB,
    for the 488M samples of 1T tokens at seq_len 2048).
    """
    order = np.arange(n, dtype=np.uint32 if n < 2**32 else np.int64)
    np.random.Generator(np.random.PCG64([seed, epoch])).shuffle(order)
    return order


class MixtureSampler:
    """This rank's sample indices, epoch after epoch, with a state that resumes mid-epoch exactly.

    Args:
      num_samples: ``len(dataset)``.
      seed: seeds every epoch's permutation (``PCG64([seed, epoch])``).
      rank, world_size: this process's place in the data-parallel group.
      drop_last: True ends each epoch at its last full step; False completes that step with the
        epoch's first samples again. Either way every rank gets the same count.
      batch_size: samples per rank per step (the DataLoader's ``batch_size``): a step is
        ``world_size * batch_size`` global positions.

    One ``iter()`` yields the rest of the current epoch; the next ``iter()`` starts the next epoch.
    Usable as a ``torch.utils.data.DataLoader`` sampler (it needs no torch).

    >>> s = MixtureSampler(10, seed=1, rank=0, world_size=2, batch_size=2)
    >>> len(s), len(list(s)), s.state_dict()["epoch"]   # 2 steps of 4 positions; 2 dropped
    (4, 4, 1)
    """

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1, *,
                 drop_last: bool = True, batch_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_samples < 1 or (drop_last and num_samples < world_size * batch_size):
            raise ValueError(
                f"{num_samples} samples cannot fill one step of world_size x batch_size = "
                f"{world_size} x {batch_size} samples" + (" with drop_last=True" if drop_last else "")
            )
        self.num_samples, self.seed = int(num_samples), int(seed)
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self.consumed = 0  # global positions of this epoch used, by all ranks together
        self._pass_len = self._pass_id = None  # this rank's count in the pass being iterated, if any

    @property
    def step_size(self) -> int:
        return self.world_size * self.batch_size

    def _steps_left(self, consumed: int) -> int:
        left = self.num_samples - consumed
        return left // self.step_size if self.drop_last else -(-left // self.step_size)

    def _position(self):
        """(epoch, consumed), rolled over to the next epoch if this one has no step left."""
        if self._steps_left(self.consumed) <= 0:
            return self.epoch + 1, 0
        return self.epoch, self.consumed

    def _positions(self, epoch: int, start: int):
        """Yield ``(global position, sample index)`` for this rank, from ``start`` to the epoch's end."""
        count = max(self._steps_left(start), 0) * self.batch_size
        self.epoch, self.consumed, self._pass_len = epoch, start, count
        this_pass = self._pass_id = object()
        order = _sample_order(self.num_samples, self.seed, epoch)
        try:
            for k in range(count):
                p = start + self.rank + k * self.world_size
                self.consumed = start + (k + 1) * self.world_size  # every rank has taken k + 1
                yield p, int(order[p % self.num_samples])
        finally:  # also when a loop breaks out of the pass, unless a newer pass has begun
            if self._pass_id is this_pass:
                self._pass_len = None

    def __iter__(self):
        return (i for _, i in self._positions(*self._position()))

    def __len__(self) -> int:
        if self._pass_len is not None:
            return self._pass_len
        return max(self._steps_left(self._position()[1]), 0) * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning, unless it is the current one (a resumed run's epoch)."""
        if epoch != self._position()[0]:
            self.epoch, self.consumed, self._pass_len = int(epoch), 0, None

    def state_dict(self) -> dict:
        """The data position to checkpoint (take it between steps, when every rank has the same)."""
        epoch, consumed = self._position()
        return {"epoch": epoch, "consumed": consumed, "seed": self.seed, "num_samples": self.num_samples,
                "world_size": self.world_size, "batch_size": self.batch_size, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; world size and batch size may differ from the saver's."""
        for key in ("seed", "num_samples"):
            if state[key] != getattr(self, key):
                raise ValueError(f"the saved data position has {key}={state[key]}, this sampler "
                                 f"{key}={getattr(self, key)}: it would not continue the same order")
        if not 0 <= state["consumed"] <= self.num_samples:
            raise ValueError(f"consumed must be in [0, {self.num_samples}], got {state['consumed']}")
        self.epoch, self.consumed, self._pass_len = int(state["epoch"]), int(state["consumed"]), None


def make_batch(samples, eos_id=None, *, reset_position_ids=False, reset_attention_mask=False,
               eod_mask_loss=False) -> dict:
    """Stack samples of ``seq_len + 1`` tokens into a training batch of numpy arrays.

    Returns ``tokens``, ``labels`` (int64 ``[B, S]``), ``loss_mask`` (float32), ``position_ids``
    (int64), and ``attention_mask`` (bool ``[B, 1, S, S]``, True = blocked) if
    ``reset_attention_mask``; the options need ``eos_id`` (see the module docstring).

    >>> b = make_batch([np.array([5, 0, 7, 8])], eos_id=0, reset_position_ids=True, eod_mask_loss=True)
    >>> b["tokens"].tolist(), b["labels"].tolist(), b["position_ids"].tolist(), b["loss_mask"].tolist()
    ([[5, 0, 7]], [[0, 7, 8]], [[0, 1, 0]], [[1.0, 0.0, 1.0]])
    """
    data = np.stack([np.asarray(s) for s in samples]).astype(np.int64)
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"expected samples of at least 2 tokens each, found shape {data.shape}")
    tokens, labels = data[:, :-1].copy(), data[:, 1:].copy()
    rows, s = tokens.shape
    positions = np.arange(s, dtype=np.int64)
    batch = {"tokens": tokens, "labels": labels, "loss_mask": np.ones((rows, s), np.float32),
             "position_ids": np.tile(positions, (rows, 1))}
    if not (reset_position_ids or reset_attention_mask or eod_mask_loss):
        return batch
    if eos_id is None:
        raise ValueError("reset_position_ids, reset_attention_mask and eod_mask_loss need eos_id "
                         "(MixtureDataset.eos_id reads it from the mixture's manifest.json)")
    is_eos = tokens == eos_id
    starts_doc = np.ones((rows, s), bool)  # a document starts at 0 and right after each EOS
    starts_doc[:, 1:] = is_eos[:, :-1]
    if eod_mask_loss:
        batch["loss_mask"][is_eos] = 0.0
    if reset_position_ids:
        first = np.maximum.accumulate(np.where(starts_doc, positions, 0), axis=1)
        batch["position_ids"] = positions - first
    if reset_attention_mask:
        doc = np.cumsum(starts_doc, axis=1)
        allowed = (doc[:, :, None] == doc[:, None, :]) & (positions[None, :, None] >= positions[None, None, :])
        batch["attention_mask"] = ~allowed[:, None]
    return batch


@dataclasses.dataclass(frozen=True)
class Collate:
    """:func:`make_batch` with fixed options, as a picklable ``collate_fn`` (numpy arrays out)."""

    eos_id: int | None = None
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False

    def __call__(self, samples) -> dict:
        return make_batch(samples, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class TorchCollate(Collate):
    """:class:`Collate` returning torch tensors (zero-copy from the numpy batch).

    >>> DataLoader(ds, batch_size=8, sampler=sampler, collate_fn=TorchCollate(ds.eos_id))  # doctest: +SKIP
    """

    def __post_init__(self):
        _import_torch("TorchCollate")

    def __call__(self, samples) -> dict:
        import torch

        return {k: torch.from_numpy(v) for k, v in super().__call__(samples).items()}


def _import_torch(what: str):
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{what} needs PyTorch, which mixprep does not install: `pip install torch` in the "
            "trainer's environment (or mixprep's `trainers` extra), or use the numpy API "
            "(MixtureDataset, MixtureSampler, make_batch)"
        ) from e
    return torch


def TorchDataset(dataset, seq_len=None):  # noqa: N802 - named for what it returns
    """A ``torch.utils.data.Dataset`` over a MixtureDataset (or a path) yielding int64 tensors.

    A DataLoader also takes a MixtureDataset as is, with ``collate_fn=TorchCollate(...)``.

    >>> loader = torch.utils.data.DataLoader(TorchDataset("out/stage1"), batch_size=8)  # doctest: +SKIP
    """
    if not isinstance(dataset, MixtureDataset):
        dataset = MixtureDataset(dataset, seq_len)
    return _torch_dataset_class()(dataset)


@functools.lru_cache(maxsize=None)
def _torch_dataset_class():
    torch = _import_torch("TorchDataset")

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
