"""held_out.py: validation and test mixtures disjoint from training by document, checked from the
provenance of every split; exact per source up to whole documents; deterministic; the default unchanged."""

import collections
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
from conftest import HELD_OUT, IN_PROCESS, SAMPLES, STAGE1, mixture, sampled_corpus, sampled_mixture

from pipeline.cache import TokenCache
from pipeline.config import config_hash
from pipeline.dataset import MixtureDataset
from pipeline.errors import ConfigError
from pipeline.layout import NEOX_FILE
from pipeline.mix.plan import PlanError
from pipeline.mixture import run_mixture
from pipeline.outputs.megatron import blend_from_args, read_megatron_args
from pipeline.outputs.verify import verify_path

SPLITS = {"train": "", "valid": "valid", "test": "test"}  # split -> folder under the mixture's


def copies(folder: str) -> list[tuple[str, int, int, int]]:
    """(source, part, row, tokens) of every document copy in a folder's shards, from their provenance."""
    out = []
    for sidecar in sorted(os.listdir(os.path.join(folder, "_shards"))):
        prov = json.load(open(os.path.join(folder, "_shards", sidecar)))["provenance"]
        refs = np.load(os.path.join(folder, prov["file"]))
        out += [(prov["sources"][r["source"]], int(r["part"]), int(r["row"]), int(r["n"])) for r in refs]
    return out


@pytest.fixture(scope="module")
def splits(held_out_run):
    return {split: copies(os.path.join(held_out_run["root"], sub)) for split, sub in SPLITS.items()}


def cache_of(run, source):
    m = run["manifest"]
    return TokenCache(os.path.join(run["cache"], source, m["sources"][source]["cache_fingerprint"][:16]))


def test_no_document_is_in_two_splits(held_out_run, splits):
    """Disjoint by document, whatever training repeats; a held-out document is there once."""
    docs = {split: {c[:3] for c in cs} for split, cs in splits.items()}
    assert not docs["train"] & docs["valid"] and not docs["train"] & docs["test"] and not docs["valid"] & docs["test"]
    for split in ("valid", "test"):
        assert len(splits[split]) == len(docs[split]) > 0  # one copy of each document
    counted = held_out_run["manifest"]["held_out"]["documents"]
    for name, d in counted.items():
        assert d["in_two_splits"] == 0
        for split in SPLITS:
            assert d[split] == sum(1 for doc in docs[split] if doc[0] == name), (name, split)
        assert d["train"] + d["valid"] + d["test"] <= d["candidates"]


def test_ids_sha256_names_the_held_out_documents(held_out_run, splits):
    for split in ("valid", "test"):
        for name, s in held_out_run["manifest"]["held_out"][split]["sources"].items():
            cache = cache_of(held_out_run, name)
            hashes = [cache.doc_table(part, columns=["doc_hash"]).column("doc_hash").to_numpy()[row]
                      for source, part, row, _ in splits[split] if source == name]
            expected = hashlib.sha256(np.sort(np.asarray(hashes, dtype="<u8")).tobytes()).hexdigest()
            assert s["ids_sha256"] == expected and s["documents"] == len(hashes), (split, name)


def test_each_split_hits_its_source_targets_up_to_a_document(held_out_run, splits):
    """Per source: requested = split_exact(split tokens, weights); achieved within the longest document the
    split took from that source (whole documents, select.py's closing subset sum); the total within the sum."""
    m = held_out_run["manifest"]
    weights = {s["name"]: s["weight"] for s in m["config"]["sources"]}
    for split, tokens in (("valid", HELD_OUT["validation_tokens"]), ("test", HELD_OUT["test_tokens"])):
        section = m["held_out"][split]
        taken = collections.defaultdict(list)
        for source, _, _, n in splits[split]:
            taken[source].append(n)
        assert section["totals"]["requested_tokens"] == tokens
        assert sum(s["requested_tokens"] for s in section["sources"].values()) == tokens
        slack = 0
        for name, s in section["sources"].items():
            assert s["requested_tokens"] == pytest.approx(tokens * weights[name], abs=1)
            assert s["achieved_tokens"] == sum(taken[name])
            assert abs(s["achieved_tokens"] - s["requested_tokens"]) <= max(taken[name]), (split, name)
            slack += max(taken[name])
        assert abs(section["totals"]["selected_tokens"] - tokens) <= slack
        assert section["totals"]["selected_tokens"] == sum(n for *_, n in splits[split])


def test_splits_keep_natural_length_proportions(held_out_run):
    """Bucket targets follow the source's own length distribution (no upweighting), within a token;
    no document is taken twice. The valid manifest's available figures are the whole source (drawn first), less
    its exact duplicates (stage 1 removes them before planning)."""
    manifests = {k: json.load(open(os.path.join(held_out_run["root"], k, "manifest.json"))) for k in ("valid", "test")}
    for split, sm in manifests.items():
        assert sm["split"]["name"] == split and sm["name"] == f"stage1-{split}"
        for name, s in sm["sources"].items():
            whole = [b["available_tokens"] for b in manifests["valid"]["sources"][name]["buckets"]]
            removed = held_out_run["manifest"]["dedup"]["sources"][name]["exact"]["tokens"]  # before any split
            assert sum(whole) == cache_of(held_out_run, name).stats["tokens"] - removed
            for b, w in zip(s["buckets"], whole):
                assert b["requested_tokens"] == pytest.approx(s["requested_tokens"] * w / sum(whole), abs=1)
                assert b["full_copies"] == 0 and b["epochs"] < 1


def test_training_plans_on_what_the_splits_left(held_out_run, runs):
    """Held-out documents leave the training candidates before the plan: the same training targets,
    fewer available tokens (by exactly what the splits took), still exact."""
    m, default = held_out_run["manifest"], runs["stage1"]
    for name, s in m["sources"].items():
        taken = sum(m["held_out"][k]["sources"][name]["achieved_tokens"] for k in ("valid", "test"))
        assert s["available_tokens"] == default["sources"][name]["available_tokens"] - taken
        assert s["requested_tokens"] == default["sources"][name]["requested_tokens"] == s["achieved_tokens"]
    assert m["totals"]["selected_tokens"] == 1_000_000


def test_splits_beyond_what_training_can_spare_fail_before_packing(runs, tmp_path):
    """max_repetition is checked against what the splits leave: 450k validation tokens take 252k of
    refinedweb's ~700k, leaving 1.24 epochs' worth for the 560k training takes (stage 1 allows 1.2)."""
    with pytest.raises(PlanError, match="refinedweb.*max_repetition=1.2"):
        run_mixture(mixture(STAGE1, total_tokens=1_000_000, validation_tokens=450_000), SAMPLES, str(tmp_path / "o"),
                    runs["cache"], IN_PROCESS)
    with pytest.raises(PlanError, match="at most one copy"):
        run_mixture(mixture(STAGE1, total_tokens=100_000, validation_tokens=2_000_000), SAMPLES, str(tmp_path / "o"),
                    runs["cache"], IN_PROCESS)


def test_negative_split_tokens_are_refused():
    with pytest.raises(ConfigError, match="validation_tokens"):
        mixture(STAGE1, validation_tokens=-1)


def tree_digest(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            if not rel.startswith("report") and name not in (NEOX_FILE, "megatron-args.txt", "megatron-args.json"):
                out[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()  # those name the folder: differ
    return out


def test_a_second_run_is_byte_identical(held_out_run, tmp_path):
    again = tmp_path / "again"
    run_mixture(mixture(STAGE1, total_tokens=1_000_000, **HELD_OUT), SAMPLES, str(again), held_out_run["cache"],
                IN_PROCESS)
    first = tree_digest(held_out_run["root"])
    assert {"valid/manifest.json", "test/stage1-test-00000-of-00001.bin", "manifest.json"} <= set(first)
    assert tree_digest(again) == first


def test_zero_splits_are_the_default_run_byte_for_byte(runs, tmp_path):
    """validation_tokens: 0 and test_tokens: 0 are no keys at all: same config hash, same bytes, no folders."""
    cfg = mixture(STAGE1, total_tokens=1_000_000, validation_tokens=0, test_tokens=0)
    assert "validation_tokens" not in cfg.to_dict() and config_hash(cfg) == runs["stage1"]["config_hash"]
    out = tmp_path / "zero"
    run_mixture(cfg, SAMPLES, str(out), runs["cache"], IN_PROCESS)
    assert tree_digest(out) == tree_digest(runs["root"] / "stage1")
    assert not os.path.exists(out / "valid") and runs["stage1"]["held_out"]["valid"] is None


def test_a_run_without_a_split_removes_an_earlier_runs(held_out_run, tmp_path):
    import shutil

    out = tmp_path / "reused"
    shutil.copytree(held_out_run["root"], out)
    run_mixture(mixture(STAGE1, total_tokens=1_000_000, validation_tokens=50_000), SAMPLES, str(out),
                held_out_run["cache"], IN_PROCESS)
    assert [f for _, _, files in os.walk(out / "test") for f in files] == []
    assert os.path.exists(out / "valid" / "manifest.json")
    assert verify_path(str(out))[-1].endswith("ok")


def test_readers_take_a_split_folder(held_out_run):
    root = str(held_out_run["root"])
    lines = verify_path(root)
    assert any(line.startswith(os.path.join(root, "valid")) for line in lines) and lines[-1].endswith("ok")
    m = held_out_run["manifest"]
    for split in ("valid", "test"):
        ds = MixtureDataset(os.path.join(root, split))
        assert len(ds) == m["held_out"][split]["totals"]["samples"] > 0 and len(ds[0]) == m["seq_len"] + 1
    assert len(MixtureDataset(root)) == m["totals"]["samples"]  # the split folders are not the mixture's shards


def test_megatron_args_name_each_split(held_out_run):
    """--train/--valid/--test-data-path, no --split: what megatron-core's blend_per_split takes."""
    from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig
    from megatron.core.datasets.utils import get_blend_from_list

    root, m = str(held_out_run["root"]), held_out_run["manifest"]
    args = read_megatron_args(root)["args"]
    assert "--split" not in args and "--data-path" not in args
    held = m["held_out"]
    for flag, shards, sub in (("--train-data-path", m["shards"], ""),
                              ("--valid-data-path", held["valid"]["shards"], "valid"),
                              ("--test-data-path", held["test"]["shards"], "test")):
        prefixes, weights = blend_from_args(args, flag)
        assert prefixes == [os.path.join(root, sub, s["prefix"]) for s in shards]
        assert weights == [float(s["tokens"]) for s in shards]
    per_split = [get_blend_from_list(args[args.index(f) + 1: args.index(f) + 1 + 2 * n])
                 for f, n in (("--train-data-path", 3), ("--valid-data-path", 1), ("--test-data-path", 1))]
    config = BlendedMegatronDatasetConfig(random_seed=1, sequence_length=m["seq_len"], blend_per_split=per_split,
                                          tokenizer=None, mid_level_dataset_surplus=0.005)
    assert config.split is None
    assert config.blend_per_split[1][0] == [os.path.join(root, "valid", held["valid"]["shards"][0]["prefix"])]


def test_held_out_splits_of_sampled_sources_stay_disjoint(tmp_path):
    """Sources 6-9x larger than the mixture takes are tokenized as a sample (sampling.py), topped up for
    what training and the splits need together (not tokenized whole); no document is in two splits."""
    sampled_corpus(tmp_path / "data", "a", 4, 8000, 1)
    sampled_corpus(tmp_path / "data", "b", 4, 8000, 2)
    cfg = sampled_mixture(tmp_path, 400_000)
    cfg = dataclasses.replace(cfg, validation_tokens=20_000, test_tokens=10_000)
    out = tmp_path / "out"
    m = run_mixture(cfg, str(tmp_path / "data"), str(out), str(tmp_path / "cache"), IN_PROCESS)
    assert all(s["tokenized"]["sampled"] for s in m["sources"].values())
    assert m["totals"]["selected_tokens"] == 400_000
    docs = {split: {c[:3] for c in copies(os.path.join(out, sub))} for split, sub in SPLITS.items()}
    assert docs["valid"] and docs["test"]
    assert not docs["train"] & docs["valid"] and not docs["train"] & docs["test"] and not docs["valid"] & docs["test"]
    assert all(d["in_two_splits"] == 0 for d in m["held_out"]["documents"].values())
