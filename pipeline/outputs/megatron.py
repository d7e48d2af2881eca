"""Megatron-LM arguments that train on a mixture as written: ``megatron-args.txt`` and ``.json``.

    args = megatron_args(manifest, "out/stage1", tokenizer="/models/gpt-neox-20b/tokenizer.json")
    # ['--data-path', '4000012', '/abs/out/stage1/stage1-00000-of-00004', ..., '--split', '100,0,0', ...]

Megatron's GPTDataset concatenates a shard's entries (each must end with EOS for documents to stay
apart), cuts windows of ``seq_length + 1`` tokens every ``seq_length`` tokens and shuffles them;
its BlendedDataset draws from the shards in proportion to their weights. Every shard is already a
mix of every source, so the weights are the shards' token counts and the blend keeps the manifest's
shares. Only ``layout: documents`` (one entry per document copy) survives that re-cutting with
documents intact; ``layout: samples`` entries are windows of ours, and Megatron's windows join
pieces of two of them with no EOS between (docs/FORMAT.md). Needs no Beam: a trainer can import it.
"""

from __future__ import annotations

import json
import os
import shlex

from .. import storage
from ..layout import ARGS_FILE, ARGS_JSON, SPLIT_FOLDERS, megatron_cache_dir
from ..storage import atomic_writer, write_json

__all__ = ["megatron_args", "megatron_notes", "write_megatron_args", "blend_from_args", "read_megatron_args"]


def _folder(out: str) -> str:
    return out if storage.is_remote(out) else os.path.abspath(out)


def tokenizer_model(tokenizer: str) -> str:
    """``--tokenizer-model`` for a tokenizer as mixprep takes it: AutoTokenizer reads a folder or a
    hub id, not a tokenizer.json file.

    >>> tokenizer_model("/models/neox/tokenizer.json"), tokenizer_model("EleutherAI/gpt-neox-20b")
    ('/models/neox', 'EleutherAI/gpt-neox-20b')
    """
    return os.path.dirname(tokenizer) or "." if tokenizer.endswith(".json") else tokenizer


def _held_out(manifest: dict) -> dict[str, dict]:
    return {k: v for k, v in (manifest.get("held_out") or {}).items() if k in SPLIT_FOLDERS and v}


def megatron_args(manifest: dict, out: str, tokenizer: str | None = None) -> list[str]:
    """Megatron-LM's data arguments for the shards of ``manifest`` in folder ``out``.

    With held-out splits: ``--train-data-path``, ``--valid-data-path`` and ``--test-data-path`` (the
    names megatron-core's ``blend_per_split`` comes from; a split not written is left out). Without:
    ``--data-path`` and ``--split 100,0,0``: everything trains, so run with ``--eval-iters 0``.
    """
    folder = _folder(out)

    def blend(shards: list[dict], sub: str = "") -> list[str]:
        return [x for s in shards for x in (str(s["tokens"]), storage.join(folder, *filter(None, (sub, s["prefix"]))))]

    held = _held_out(manifest)
    if held:
        data = ["--train-data-path", *blend(manifest["shards"])]
        for split, v in held.items():
            data += [f"--{split}-data-path", *blend(v["shards"], v["folder"])]
    else:
        data = ["--data-path", *blend(manifest["shards"]), "--split", "100,0,0"]
    return [
        *data,
        "--seq-length", str(manifest["seq_len"]),
        "--tokenizer-type", "HuggingFaceTokenizer",
        "--tokenizer-model", tokenizer_model(tokenizer or manifest["tokenizer"]["name"]),
        "--data-cache-path", megatron_cache_dir(folder),
    ]


def megatron_notes(manifest: dict) -> list[str]:
    """What a user should know before passing the arguments on, one line each."""
    layout = manifest.get("layout", "samples")
    notes = [f"mixprep {manifest['name']}: Megatron-LM data arguments (layout: {layout}).",
             "Weights are each shard's token count; every shard holds every source, so the blend keeps "
             "the manifest's shares.",
             ("Per-split paths: the held-out splits' shards (disjoint from training by document) for "
              f"{' and '.join(_held_out(manifest))}." if _held_out(manifest) else
              "--split 100,0,0: no held-out split yet; run with --eval-iters 0 or add --valid-data-path."),
             "--tokenizer-model is a folder AutoTokenizer loads (tokenizer.json + tokenizer_config.json) "
             "or a hub id."]
    if layout != "documents":
        notes.append("WARNING: layout samples. Megatron re-cuts windows across entries, joining pieces of "
                     "two samples with no EOS between; build the mixture with layout: documents for Megatron.")
    return notes


def write_megatron_args(manifest: dict, out: str, tokenizer: str | None = None) -> list[str]:
    """Write ``out/megatron-args.txt`` (comments, then the arguments on one shell-quoted line) and
    ``out/megatron-args.json`` ({layout, notes, args}); returns the arguments."""
    args, notes = megatron_args(manifest, out, tokenizer), megatron_notes(manifest)
    text = "".join(f"# {n}\n" for n in notes) + shlex.join(args) + "\n"
    with atomic_writer(storage.join(out, ARGS_FILE), "wb") as f:
        f.write(text.encode())
    write_json(storage.join(out, ARGS_JSON), {"layout": manifest.get("layout", "samples"), "notes": notes,
                                              "args": args})
    return args


def blend_from_args(args: list[str], flag: str = "--data-path") -> tuple[list[str], list[float]]:
    """(prefixes, weights) of ``--data-path W1 P1 W2 P2 ...`` (or another ``flag``), as megatron-core's
    config takes a blend."""
    i = args.index(flag) + 1
    j = next((k for k in range(i, len(args)) if args[k].startswith("--")), len(args))
    pairs = args[i:j]
    return pairs[1::2], [float(w) for w in pairs[0::2]]


def read_megatron_args(out: str) -> dict:
    with storage.open_read(storage.join(out, ARGS_JSON)) as f:
        return json.load(f)
