"""Changing the tokenizer, the source files or the config after a cache or a mixture exists is
detected: stale tokens never reach new shards, and stale shards are never reused."""

import gzip
import hashlib
import json
import os
import shutil

import pytest
from conftest import ROOT, SAMPLES, TOKENIZER

from pipeline.config import load_mixture
from pipeline.mixture import run_mixture

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")


def cfg(**overrides):
    return load_mixture(STAGE1, {"tokenizer": TOKENIZER, "total_tokens": 200_000, "shards": 2, **overrides})


def shards(folder):
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder)) if n.endswith((".bin", ".idx"))}


def fingerprints(manifest):
    return {name: s["cache_fingerprint"] for name, s in manifest["sources"].items()}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(SAMPLES, root)
    return root


def test_a_changed_source_file_gets_a_new_cache(tmp_path, data):
    cache = str(tmp_path / "cache")
    first = run_mixture(cfg(), str(data), str(tmp_path / "a"), cache, IN_PROCESS)
    path = data / "allenai" / "c4" / "en" / "c4-train.00000-of-01024.json.gz"
    lines = gzip.decompress(path.read_bytes()).splitlines()
    lines[0] = json.dumps({"text": "A replaced first document, different from before."}).encode()
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", mtime=0))
    second = run_mixture(cfg(), str(data), str(tmp_path / "a"), cache, IN_PROCESS)
    changed = {n for n in fingerprints(first) if fingerprints(first)[n] != fingerprints(second)[n]}
    assert changed == {"c4"}
    fresh = run_mixture(cfg(), str(data), str(tmp_path / "fresh"), str(tmp_path / "fresh-cache"), IN_PROCESS)
    assert shards(tmp_path / "a") == shards(tmp_path / "fresh")
    assert fresh["plan_hash"] == second["plan_hash"]


def test_another_tokenizer_gets_new_caches(tmp_path):
    cache = str(tmp_path / "cache")
    first = run_mixture(cfg(), SAMPLES, str(tmp_path / "a"), cache, IN_PROCESS)
    tok = json.load(open(TOKENIZER, encoding="utf-8"))
    tok["model"]["merges"] = tok["model"]["merges"][:-50]  # a different tokenizer, same special ids
    for token in list(tok["model"]["vocab"])[-50:]:
        del tok["model"]["vocab"][token]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(tok), encoding="utf-8")
    second = run_mixture(cfg(tokenizer=str(other)), SAMPLES, str(tmp_path / "a"), cache, IN_PROCESS)
    assert all(fingerprints(first)[n] != fingerprints(second)[n] for n in fingerprints(first))
    assert second["tokenizer"]["sha256"] != first["tokenizer"]["sha256"]
    assert shards(tmp_path / "a") != {}


def test_a_changed_config_never_reuses_old_shards(tmp_path):
    cache = str(tmp_path / "cache")
    run_mixture(cfg(seed=1), SAMPLES, str(tmp_path / "out"), cache, IN_PROCESS)
    old = shards(tmp_path / "out")
    run_mixture(cfg(seed=2), SAMPLES, str(tmp_path / "out"), cache, IN_PROCESS)
    run_mixture(cfg(seed=2), SAMPLES, str(tmp_path / "fresh"), cache, IN_PROCESS)
    assert shards(tmp_path / "out") == shards(tmp_path / "fresh") != old
    # Fewer shards than before: the extra old shards are removed, not left beside the new ones.
    run_mixture(cfg(seed=2, shards=1), SAMPLES, str(tmp_path / "out"), cache, IN_PROCESS)
    assert sorted(shards(tmp_path / "out")) == ["stage1-00000-of-00001.bin", "stage1-00000-of-00001.idx"]
