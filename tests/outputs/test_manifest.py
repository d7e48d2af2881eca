"""manifest.py: every share recomputed from the shards and their provenance alone, and a GPT-NeoX data
config that passes GPT-NeoX's own argument checks (transcribed below from its source)."""

import collections
import hashlib
import json
import os
import typing
from typing import Literal

import numpy as np
import pytest

from pipeline.cache import TokenCache
from pipeline.layout import NEOX_FILE, TOKENIZER_FILE
from pipeline.mmidx import MMIDXReader

STAGES = ["stage1", "stage2"]


# --- the shards, read back -------------------------------------------------------------------


def read_shards(folder: str, cache_root: str, width: int) -> dict:
    """Every shard's copies (provenance), written tokens (.idx) and the tail between them, checked
    against the caches' tokens: the provenance's stream, cut at the shard's written tokens, is its .bin."""
    copies, tails = [], []
    for shard in sorted(f[:-5] for f in os.listdir(os.path.join(folder, "_shards")) if f.endswith(".json")):
        with open(os.path.join(folder, "_shards", shard + ".json")) as f:
            prov = json.load(f)["provenance"]
        refs = np.load(os.path.join(folder, prov["file"]))
        idx = MMIDXReader(os.path.join(folder, shard))
        n = refs["n"].astype(np.int64)
        tail = int(n.sum()) - idx.num_tokens
        assert 0 <= tail < width
        written = np.fromfile(os.path.join(folder, shard + ".bin"), dtype=idx.dtype)
        assert np.array_equal(stream(refs, prov["sources"], folder, cache_root)[: idx.num_tokens], written)
        # The tail is the stream's last `tail` tokens: it falls on the last copies.
        charged = np.clip(np.cumsum(n) - idx.num_tokens, 0, n)
        copies.append((refs, np.asarray(prov["sources"])[refs["source"]], charged))
        tails.append(tail)
    return {"copies": copies, "tails": tails}


def stream(refs, names, folder, cache_root):
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    caches = {s: TokenCache(os.path.join(cache_root, s, manifest["sources"][s]["cache_fingerprint"][:16]))
              for s in set(names)}
    return np.concatenate([caches[names[r["source"]]].tokens(int(r["part"]))[int(r["row"])] for r in refs])


def recompute(folder: str, cache_root: str, config: dict, bounds: list[int], width: int) -> dict:
    """Tokens per source, (source, bucket), category and (source, subset), from the shards alone."""
    shards = read_shards(folder, cache_root, width)
    category = {s["name"]: s["category"] for s in config["sources"]}
    got = collections.defaultdict(lambda: collections.Counter())
    subset_docs = collections.defaultdict(set)
    for refs, names, charged in shards["copies"]:
        n = refs["n"].astype(np.int64)
        bucket = np.searchsorted(np.asarray(bounds), n, side="right")
        for i, name in enumerate(names.tolist()):
            got[name]["selected"] += int(n[i])
            got[name]["written"] += int(n[i] - charged[i])
            got[name]["tail"] += int(charged[i])
            got[name]["copies"] += 1
            got[(name, int(bucket[i]))]["selected"] += int(n[i])
            got[(name, int(bucket[i]))]["copies"] += 1
            got[("category", category[name])]["selected"] += int(n[i])
            got[("category", category[name])]["written"] += int(n[i] - charged[i])
            subset = subset_of(folder, cache_root, name, int(refs["part"][i]), int(refs["row"][i]))
            got[(name, "subset", subset)]["selected"] += int(n[i])
            got[(name, "subset", subset)]["copies"] += 1
            subset_docs[(name, subset)].add((int(refs["part"][i]), int(refs["row"][i])))
    for key, docs in subset_docs.items():
        got[(key[0], "subset", key[1])]["documents"] = len(docs)
    got["total"]["selected"] = sum(v["selected"] for k, v in got.items() if isinstance(k, str) and k != "total")
    got["total"]["tail"] = sum(shards["tails"])
    got["total"]["written"] = got["total"]["selected"] - got["total"]["tail"]
    return got


_SUBSETS: dict = {}


def subset_of(folder, cache_root, source, part, row):
    key = (folder, source, part)
    if key not in _SUBSETS:
        m = json.load(open(os.path.join(folder, "manifest.json")))
        cache = TokenCache(os.path.join(cache_root, source, m["sources"][source]["cache_fingerprint"][:16]))
        _SUBSETS[key] = cache.doc_table(part, columns=["subset"]).column("subset").to_pylist()
    return _SUBSETS[key][row]


def share(x, total):
    return x / total if total else 0.0


@pytest.mark.parametrize("stage", STAGES)
def test_every_share_is_recomputed_from_the_shards(runs, stage):
    """Integers equal, shares to 1e-9: per source, bucket, category and subset; requested, selected, written."""
    m, folder = runs[stage], str(runs["root"] / stage)
    got = recompute(folder, runs["cache"], m["config"], m["length_bounds"], m["seq_len"] + 1)
    total = got["total"]
    assert (m["totals"]["selected_tokens"], m["totals"]["written_tokens"], m["totals"]["tail_tokens"]) == (
        total["selected"], total["written"], total["tail"])
    assert m["totals"]["requested_tokens"] == m["config"]["total_tokens"]
    for name, s in m["sources"].items():
        g = got[name]
        assert (s["achieved_tokens"], s["written_tokens"], s["tail_tokens"], s["copies"]) == (
            g["selected"], g["written"], g["tail"], g["copies"]), name
        assert s["achieved_share"] == pytest.approx(share(g["selected"], total["selected"]), abs=1e-9)
        assert s["written_share"] == pytest.approx(share(g["written"], total["written"]), abs=1e-9)
        requested = share(s["requested_tokens"], m["config"]["total_tokens"])
        assert s["requested_share"] == pytest.approx(requested, abs=1e-9)
        assert s["requested_tokens"] == sum(b["requested_tokens"] for b in s["buckets"])
        for k, b in enumerate(s["buckets"]):
            assert (b["achieved_tokens"], b["copies"]) == (got[(name, k)]["selected"], got[(name, k)]["copies"])
            assert b["achieved_share"] == pytest.approx(share(got[(name, k)]["selected"], total["selected"]), abs=1e-9)
            assert b["requested_share"] == pytest.approx(share(b["requested_tokens"], m["config"]["total_tokens"]),
                                                         abs=1e-9)
        subsets = {k[2]: v for k, v in got.items() if isinstance(k, tuple) and len(k) == 3 and k[0] == name}
        assert set(s["subsets"]) == set(subsets), name
        for sub, v in s["subsets"].items():
            g = subsets[sub]
            counts = (v["documents"], v["copies"], v["tokens"])
            assert counts == (g["documents"], g["copies"], g["selected"]), (name, sub)
            assert v["share_of_source"] == pytest.approx(share(g["selected"], s["achieved_tokens"]), abs=1e-9)
    for c, v in m["categories"].items():
        g = got[("category", c)]
        assert (v["achieved_tokens"], v["written_tokens"]) == (g["selected"], g["written"]), c
        assert v["achieved_share"] == pytest.approx(share(g["selected"], total["selected"]), abs=1e-9)
        assert v["written_share"] == pytest.approx(share(g["written"], total["written"]), abs=1e-9)


@pytest.mark.parametrize("stage", STAGES)
def test_each_kind_of_share_sums_to_one(runs, stage):
    m = runs[stage]
    for kind in ("requested_share", "achieved_share", "written_share"):
        assert sum(s[kind] for s in m["sources"].values()) == pytest.approx(1, abs=1e-6), kind
        assert sum(c[kind] for c in m["categories"].values()) == pytest.approx(1, abs=1e-6), kind
    for name, s in m["sources"].items():
        assert sum(v["share_of_source"] for v in s["subsets"].values()) == pytest.approx(1, abs=1e-6), name


def test_subsets_name_the_corpora_parts(runs):
    s = runs["stage2"]["sources"]
    assert len(s["pile"]["subsets"]) > 1 and len(s["redpajama"]["subsets"]) > 1 and len(s["starcoder"]["subsets"]) > 1
    text = open(runs["root"] / "stage2" / "report.md", encoding="utf-8").read()
    assert "### Subsets" in text
    for sub, v in s["starcoder"]["subsets"].items():
        assert f"| `starcoder` | `{sub}` | {v['documents']:,} | {v['copies']:,} | {v['tokens']:,} |" in text


# --- GPT-NeoX's argument checks ---------------------------------------------------------------
# Transcribed from EleutherAI/gpt-neox, megatron/neox_arguments/arguments.py at commit
# 9c645dd8629eb0f83719d902d3380539cdc3b4b1: NeoXArgs.from_ymls (keys: "-" -> "_", then cls(**config),
# so an unknown key is a TypeError), calculate_derived (missing weights default to 1.0 each),
# validate_types and validate_values (the data-path rules); and megatron/data/data_utils.py at
# b2f1101da0e56cc0caee8fee60ffaaa4c04c5740 (get_normalized_weights_and_num_samples asserts each
# weight list sums > 0; do_valid/do_test need eval_iters > 0).
# The data-related fields of megatron/neox_arguments/neox_args.py (NeoXArgsTraining, NeoXArgsTokenizer,
# NeoXArgsModel.seq_length) with their declared types. NEOX_FIELDS: after PR #1240 (merged August
# 2024, which added pack_impl); NEOX_2023_FIELDS: at e897c23e921101a3d84208f2717e0c462e8bd20a (2023),
# where data_impl is a plain str and pack_impl does not exist.

_TOKENIZERS = Literal["GPT2BPETokenizer", "HFTokenizer", "HFGPT2Tokenizer", "SPMTokenizer", "CharLevelTokenizer",
                      "TiktokenTokenizer"]
NEOX_2023_FIELDS = {
    "seq_length": int, "tokenizer_type": _TOKENIZERS, "padded_vocab_size": int,
    "data_path": str, "use_shared_fs": bool, "train_data_paths": list, "test_data_paths": list,
    "valid_data_paths": list, "train_data_weights": list, "valid_data_weights": list, "test_data_weights": list,
    "weight_by_num_documents": bool, "weighted_sampler_alpha": float, "data_impl": str, "mmap_warmup": bool,
    "train_iters": int, "eval_iters": int, "eval_interval": int, "split": str, "vocab_file": str, "merge_file": str,
    "num_workers": int,
}
NEOX_FIELDS = {
    **NEOX_2023_FIELDS,
    "train_label_data_paths": list, "test_label_data_paths": list, "valid_label_data_paths": list,
    "data_impl": Literal["infer", "mmap", "cached"],
    "pack_impl": Literal["packed", "pack_until_overflow", "unpacked"],
    "dataset_impl": Literal["gpt2", "pairwise"],
    "allow_chopped": bool, "train_epochs": int,
}


def neox_args(conf: dict, fields: dict) -> dict:
    """NeoXArgs(**config) from a config file's keys: every field not given is None (its default here)."""
    args = {k.replace("-", "_"): v for k, v in conf.items()}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise TypeError(f"NeoXArgs.__init__() got an unexpected keyword argument {unknown[0]!r}")
    args = {**dict.fromkeys(fields), **args}
    for split in ("train", "valid", "test"):  # calculate_derived
        if args[f"{split}_data_paths"] and args[f"{split}_data_weights"] is None:
            args[f"{split}_data_weights"] = [1.0] * len(args[f"{split}_data_paths"])
    return args


def neox_type_errors(args: dict, fields: dict) -> list[str]:
    """validate_types: the exact declared type; an int for a float; a Literal's value (case-insensitive)."""
    errors = []
    for name, declared in fields.items():
        value = args[name]
        if value is None or type(value) is declared or (type(value) is int and declared is float):
            continue
        if typing.get_origin(declared) is Literal:
            choices = typing.get_args(declared)
            if value in choices or (isinstance(value, str) and value.lower() in [c.lower() for c in choices]):
                continue
        errors.append(f"{name}: {value!r} is not {declared}")
    return errors


def neox_value_errors(args: dict) -> list[str]:
    """validate_values' data-path rules, and the data loader's weight sums."""
    paths = [args[f"{s}_data_paths"] for s in ("train", "valid", "test")]
    given = [p is not None for p in paths]
    errors = []
    if all(given) and args["data_path"] is not None:
        errors.append("Please provide *either* `data_path` or `train/valid/test_data_path` in args")
    if any(given) != all(given):
        errors.append("One or more of train/valid/test data_path are not provided")
    for s in ("train", "valid", "test"):
        if args[f"{s}_data_paths"] is not None:
            if args[f"{s}_data_weights"] is None or len(args[f"{s}_data_paths"]) != len(args[f"{s}_data_weights"]):
                errors.append(f"{s}: paths and weights differ in length")
            elif not sum(args[f"{s}_data_weights"]) > 0:
                errors.append(f"{s}: weights sum to 0")
    return errors


def evaluates(args: dict) -> bool:
    """do_valid / do_test: a loader exists and eval_iters > 0 (eval_iters defaults to 100)."""
    eval_iters = 100 if args["eval_iters"] is None else args["eval_iters"]
    return bool(args["valid_data_paths"] or args["data_path"]) and eval_iters > 0


@pytest.fixture(scope="module")
def neox(runs):
    folder = runs["root"] / "stage2"
    return json.load(open(folder / NEOX_FILE)), runs["stage2"], folder


def test_the_neox_config_passes_neox_checks(neox):
    conf, _, _ = neox
    args = neox_args(conf, NEOX_FIELDS)
    assert neox_type_errors(args, NEOX_FIELDS) == []
    assert neox_value_errors(args) == []
    assert not evaluates(args)  # no held-out split in this run: nothing is evaluated on training shards


def test_with_held_out_splits_neox_evaluates_on_them(held_out_run):
    """valid/test paths name the held-out shards, never a training shard, and eval-iters is left to the
    user (GPT-NeoX's default, 100, evaluates); both sets of rules pass."""
    folder, m = held_out_run["root"], held_out_run["manifest"]
    conf = json.load(open(folder / NEOX_FILE))
    assert "eval-iters" not in conf
    for fields in (NEOX_FIELDS, NEOX_2023_FIELDS):
        conf_for = conf if fields is NEOX_FIELDS else {k: v for k, v in conf.items() if k != "pack-impl"}
        args = neox_args(conf_for, fields)
        assert neox_type_errors(args, fields) == [] and neox_value_errors(args) == []
        assert evaluates(args)
    for split in ("valid", "test"):
        shards = m["held_out"][split]["shards"]
        assert conf[f"{split}-data-paths"] == [str(folder / split / s["prefix"]) for s in shards]
        assert conf[f"{split}-data-weights"] == [s["sequences"] for s in shards]
        assert all(os.path.exists(p + ".bin") for p in conf[f"{split}-data-paths"])
        assert not set(conf[f"{split}-data-paths"]) & set(conf["train-data-paths"])
    assert conf["train-data-paths"] == [str(folder / s["prefix"]) for s in m["shards"]]
    assert evaluates(neox_args({**conf, "eval-iters": 0}, NEOX_FIELDS)) is False  # a user's 0 still wins


@pytest.mark.parametrize("split", ["valid", "test"])
def test_held_out_figures_are_recomputed_from_their_shards(held_out_run, split):
    """A split's manifest, like a mixture's: tokens per source from its shards and provenance alone."""
    folder = str(held_out_run["root"] / split)
    m = json.load(open(os.path.join(folder, "manifest.json")))
    got = recompute(folder, held_out_run["cache"], m["config"], m["length_bounds"], m["seq_len"] + 1)
    total = got["total"]
    assert (m["totals"]["selected_tokens"], m["totals"]["written_tokens"], m["totals"]["tail_tokens"]) == (
        total["selected"], total["written"], total["tail"])
    section = held_out_run["manifest"]["held_out"][split]
    assert section["totals"] == m["totals"] and [s["prefix"] for s in section["shards"]] == [
        s["prefix"] for s in m["shards"]]
    for name, s in m["sources"].items():
        g = got[name]
        assert (s["achieved_tokens"], s["written_tokens"], s["tail_tokens"], s["copies"], s["documents"]) == (
            g["selected"], g["written"], g["tail"], g["copies"], g["copies"]), name
        assert s["achieved_share"] == pytest.approx(share(g["selected"], total["selected"]), abs=1e-9)
        assert section["sources"][name]["achieved_tokens"] == g["selected"]


def test_the_neox_checks_catch_what_the_old_config_did(neox):
    """The transcription is not vacuous: train paths alone, or a wrong weight count, are refused."""
    conf, _, _ = neox
    train_only = {k: v for k, v in conf.items() if not k.startswith(("valid-", "test-"))}
    assert "One or more of train/valid/test data_path are not provided" in neox_value_errors(
        neox_args(train_only, NEOX_FIELDS))
    short = {**conf, "test-data-weights": conf["test-data-weights"][:-1]}
    assert neox_value_errors(neox_args(short, NEOX_FIELDS)) == ["test: paths and weights differ in length"]
    assert neox_type_errors(neox_args({**conf, "data-impl": "lazy"}, NEOX_FIELDS), NEOX_FIELDS)
    with pytest.raises(TypeError, match="vocab"):
        neox_args({**conf, "vocab": "x"}, NEOX_FIELDS)


def test_older_neox_takes_the_config_without_pack_impl(neox):
    conf, _, _ = neox
    with pytest.raises(TypeError, match="pack_impl"):
        neox_args(conf, NEOX_2023_FIELDS)
    older = {k: v for k, v in conf.items() if k != "pack-impl"}
    args = neox_args(older, NEOX_2023_FIELDS)
    assert neox_type_errors(args, NEOX_2023_FIELDS) == [] and neox_value_errors(args) == []


def test_the_neox_config_names_the_shards_and_a_tokenizer_the_trainer_can_open(neox):
    conf, m, folder = neox
    prefixes = [str(folder / s["prefix"]) for s in m["shards"]]
    for key in ("train", "valid", "test"):
        assert conf[f"{key}-data-paths"] == prefixes
        assert conf[f"{key}-data-weights"] == [s["sequences"] for s in m["shards"]]
    assert all(os.path.isabs(p) and os.path.exists(p + ".bin") and os.path.exists(p + ".idx") for p in prefixes)
    shape = (conf["seq-length"], conf["data-impl"], conf["pack-impl"], conf["eval-iters"])
    assert shape == (4096, "mmap", "unpacked", 0)
    assert conf["tokenizer-type"] == "HFTokenizer" and conf["vocab-file"] == str(folder / TOKENIZER_FILE)
    data = open(conf["vocab-file"], "rb").read()
    assert hashlib.sha256(data).hexdigest() == m["tokenizer"]["sha256"]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(conf["vocab-file"])  # what GPT-NeoX's HFTokenizer does with vocab-file
    assert tok.token_to_id("<|endoftext|>") == m["tokenizer"]["eos_id"]
    assert m["held_out"]["valid"] is None and "no held-out split" in m["held_out"]["note"]


def neox_sample_idx(sizes, doc_idx, seq_length, num_epochs, tokens_per_epoch):
    """GPT-NeoX's packed windows (``_build_sample_idx``, megatron/data/gpt2_dataset.py at
    b2f1101da0e56cc0caee8fee60ffaaa4c04c5740, its Python version): [window, (doc_idx index, offset)]."""
    num_samples = (num_epochs * tokens_per_epoch - 1) // seq_length
    sample_idx = np.zeros([num_samples + 1, 2], dtype=np.int64)
    doc_idx_index, doc_offset = 0, 0
    for sample_index in range(1, num_samples + 1):
        remaining_seq_length = seq_length + 1
        while remaining_seq_length != 0:
            doc_length = sizes[doc_idx[doc_idx_index]] - doc_offset
            remaining_seq_length -= doc_length
            if remaining_seq_length <= 0:
                doc_offset += remaining_seq_length + doc_length - 1
                remaining_seq_length = 0
            else:
                doc_idx_index += 1
                doc_offset = 0
        sample_idx[sample_index] = doc_idx_index, doc_offset
    return sample_idx


def test_older_neox_windows_line_up_with_entries_one_token_shorter(runs):
    """docs/GPT-NEOX.md: without pack-impl, windows of seq-length + 1 advance by seq-length. They start
    at an entry's first token only when seq-length is the entry's length (the mixture's seq_len + 1)."""
    m = runs["stage2"]
    sizes = np.full(m["totals"]["samples"], m["sample_tokens"], dtype=np.int64)
    doc_idx = np.random.RandomState(1234).permutation(len(sizes))  # GPT-NeoX shuffles the entries
    aligned = neox_sample_idx(sizes, doc_idx, m["sample_tokens"], 1, int(sizes.sum()))
    assert len(aligned) == len(sizes) and not aligned[:, 1].any()
    straddling = neox_sample_idx(sizes, doc_idx, m["seq_len"], 1, int(sizes.sum()))
    assert np.count_nonzero(straddling[1:, 1]) >= len(straddling) - 2
