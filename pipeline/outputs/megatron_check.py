"""Check a mixture the way Megatron-LM reads it: megatron-core's own datasets over our shards.

    report = check_epoch("out/stage1", cache_root="out/cache")   # needs torch + megatron-core
    report.joined, report.shares()                                # samples that join documents; shares

``megatron_epoch`` builds ``BlendedMegatronDatasetBuilder`` + ``GPTDataset`` from the run's
``megatron-args.json`` (Megatron's own ``get_blend_from_list`` parses ``--data-path``) for one epoch:
every shard's windows, blended by the emitted weights. Each sample is then placed in our own stream:
Megatron's sample index says which entries and offsets it read, our ``.idx`` where each entry sits in
the shard's stream and the provenance which document copy holds each stream position. A sample is
sound when, wherever two neighbouring tokens come from different copies, the first is its copy's last
token (its EOS) and the second its copy's first, and within a copy positions are consecutive: so its
runs between EOS are pieces of one document each, and every inner run a whole document. The copies'
tokens are compared with the token caches' documents, so "document" means a real document of ours.

Imports neither Beam nor (until called) torch: a trainer's environment runs it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os

import numpy as np

from ..layout import (
    cache_dir,
    cache_manifest,
    manifest_path,
    megatron_cache_dir,
    provenance_path,
    shard_prefix,
    sidecar_path,
)
from ..mmidx import MMIDXReader
from .megatron import read_megatron_args

__all__ = ["check_epoch", "megatron_epoch", "EpochCheck", "ShardStream"]


class _Tokenizer:
    """What megatron-core's GPTDataset asks of a tokenizer when the tokens are already ids."""

    def __init__(self, eod: int, vocab_size: int):
        self.eod, self.vocab_size = eod, vocab_size
        self.unique_identifiers = {"class": "mixprep", "eod": eod, "vocab_size": vocab_size}


def _flag(args: list[str], name: str) -> list[str]:
    """The values after ``name`` up to the next flag."""
    i = args.index(name) + 1
    j = next((k for k in range(i, len(args)) if args[k].startswith("--")), len(args))
    return args[i:j]


def megatron_epoch(out: str, cache_dir: str, seed: int = 1234):
    """megatron-core's BlendedDataset over the run's shards with its emitted arguments, one epoch long.

    One epoch: each shard's whole windows (Megatron's count: ``(tokens - 1) // seq_length``).
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import get_blend_from_list

    args = read_megatron_args(out)["args"]
    manifest = _manifest(out)
    seq_length = int(_flag(args, "--seq-length")[0])
    tok = manifest["tokenizer"]
    if "--data-path" in args:
        data = {"blend": get_blend_from_list(_flag(args, "--data-path")), "split": _flag(args, "--split")[0]}
    else:  # held-out splits: one blend per split; the epoch is training's
        data = {"blend_per_split": [get_blend_from_list(_flag(args, f"--{k}-data-path"))
                                    if f"--{k}-data-path" in args else None for k in ("train", "valid", "test")]}
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, **data, path_to_cache=cache_dir, mmap_bin_files=True,
        tokenizer=_Tokenizer(tok["eos_id"], tok["vocab_size"]),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
    )
    epoch = sum((s["tokens"] - 1) // seq_length for s in manifest["shards"])
    with _one_process_group(cache_dir):
        (train, _, _) = BlendedMegatronDatasetBuilder(GPTDataset, [epoch, 0, 0], lambda: True, config).build()
    return train


@contextlib.contextmanager
def _one_process_group(folder: str):
    """A world of one rank (gloo) while building: BlendedDataset asks for the rank when it caches its
    indices, as a trainer's launcher would have set up. A group already running is left alone."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    os.makedirs(folder, exist_ok=True)
    store = os.path.join(folder, f"store-{os.getpid()}")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        if os.path.exists(store):
            os.remove(store)


def _manifest(out: str) -> dict:
    with open(manifest_path(out), encoding="utf-8") as f:
        return json.load(f)


class ShardStream:
    """One shard as our stream: tokens, where each entry starts, which copy holds each position."""

    def __init__(self, out: str, prefix: str):
        self.reader = MMIDXReader(shard_prefix(out, prefix))  # checks the pair before we read the .bin
        self.tokens = np.fromfile(self.reader.bin_path, dtype=self.reader.dtype)
        lengths = self.reader.sequence_lengths.astype(np.int64)
        self.entry_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        refs = np.load(provenance_path(out, prefix))
        with open(sidecar_path(out, prefix), encoding="utf-8") as f:
            self.source_names = json.load(f)["provenance"]["sources"]
        n = refs["n"].astype(np.int64)
        self.refs = refs
        self.copy_start = np.concatenate([[0], np.cumsum(n)[:-1]])
        self.copy_end = self.copy_start + n

    def check_documents(self, cache_root: str, manifest: dict) -> int:
        """Every copy's tokens in the stream equal its document in the token cache; returns copies checked."""
        parts = _cache_parts(cache_root, manifest)
        for c, r in enumerate(self.refs):
            start, end = int(self.copy_start[c]), min(int(self.copy_end[c]), len(self.tokens))
            if start >= len(self.tokens):  # a samples-layout tail
                break
            doc = parts[self.source_names[r["source"]], int(r["part"])][int(r["row"])]
            if not np.array_equal(self.tokens[start:end], doc[: end - start]):
                raise AssertionError(f"{self.reader.prefix}: copy {c} differs from its cached document")
        return len(self.refs)

    def positions(self, dataset, sample: int) -> np.ndarray:
        """Stream positions of the tokens of GPTDataset ``dataset``'s sample ``sample``, read as
        megatron-core's ``_query_document_sample_shuffle_indices`` reads them."""
        j = dataset.shuffle_index[sample]
        (first, first_offset), (last, last_offset) = dataset.sample_index[j], dataset.sample_index[j + 1]
        pieces = []
        for k in range(int(first), int(last) + 1):
            entry = int(dataset.document_index[k])
            begin = int(first_offset) if k == first else 0
            end = int(last_offset) + 1 if k == last else int(self.reader.sequence_lengths[entry])
            pieces.append(self.entry_start[entry] + np.arange(begin, end))
        return np.concatenate(pieces)


def _cache_parts(cache_root: str, manifest: dict) -> dict:
    """(source, part index) -> MMIDXReader of that token-cache part."""
    out = {}
    for name, s in manifest["sources"].items():
        folder = cache_dir(cache_root, name, s["cache_fingerprint"])
        with open(cache_manifest(folder), encoding="utf-8") as f:
            for i, part in enumerate(json.load(f)["parts"]):
                out[name, i] = MMIDXReader(os.path.join(folder, part["part"]))
    return out


@dataclasses.dataclass
class EpochCheck:
    samples: int = 0
    joined: int = 0  # samples in which two documents meet without EOS, or a document skips tokens
    boundaries: int = 0  # document ends inside sound samples (EOS, then the next document's first token)
    whole_documents: int = 0  # inner runs: whole documents between two EOS
    tokens: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per source
    example: str = ""

    def shares(self) -> dict[str, float]:
        total = sum(self.tokens.values())
        return {name: n / total for name, n in sorted(self.tokens.items())}


def check_sample(stream: ShardStream, pos: np.ndarray, text: np.ndarray, eos: int) -> tuple[bool, int, np.ndarray]:
    """(sound, document boundaries inside, copy index of each token) for one sample at stream ``pos``."""
    if not np.array_equal(stream.tokens[pos], text):
        raise AssertionError("megatron-core's sample differs from the stream at the positions its index names")
    copy = np.searchsorted(stream.copy_start, pos, side="right") - 1
    change = np.flatnonzero(copy[1:] != copy[:-1])
    same = np.flatnonzero(copy[1:] == copy[:-1])
    sound = (np.all(pos[same + 1] == pos[same] + 1)
             and np.all(text[change] == eos)
             and np.all(pos[change] == stream.copy_end[copy[change]] - 1)
             and np.all(pos[change + 1] == stream.copy_start[copy[change + 1]]))
    return bool(sound), len(change), copy


def check_epoch(out: str, cache_root: str | None = None, index_cache: str | None = None, seed: int = 1234,
                limit: int | None = None) -> EpochCheck:
    """Build one Megatron epoch over ``out`` and check every sample (or the first ``limit``).

    Tokens are counted as Megatron trains on them: each sample's ``seq_length`` inputs (its extra
    token is the next window's first), charged to the source of the copy that holds them.
    """
    manifest = _manifest(out)
    eos = manifest["tokenizer"]["eos_id"]
    blended = megatron_epoch(out, index_cache or megatron_cache_dir(out), seed)
    streams = [ShardStream(out, os.path.basename(d.dataset.path_prefix)) for d in blended.datasets]
    if cache_root is not None:
        for s in streams:
            s.check_documents(cache_root, manifest)
    report = EpochCheck()
    for i in range(len(blended) if limit is None else min(limit, len(blended))):
        d, s = int(blended.dataset_index[i]), int(blended.dataset_sample_index[i])
        item = blended[i]
        text = np.concatenate([item["tokens"].numpy(), item["labels"].numpy()[-1:]])
        stream = streams[d]
        sound, changes, copy = check_sample(stream, stream.positions(blended.datasets[d], s), text, eos)
        report.samples += 1
        if sound:
            report.boundaries += changes
            report.whole_documents += max(changes - 1, 0)  # runs with an EOS boundary on both sides
        else:
            report.joined += 1
            report.example = report.example or f"sample {i} (shard {d}, window {s})"
        sources = stream.refs["source"][copy[:-1]]
        for k, n in zip(*np.unique(sources, return_counts=True)):
            report.tokens[stream.source_names[int(k)]] += int(n)
    return report
