"""Tokenizing only a sample of a source that holds far more than the mixture takes (sampling.py)."""

import hashlib
import json
import os
import random

import numpy as np
import pytest
from conftest import IN_PROCESS, sampled_corpus, sampled_mixture

from pipeline.cache import TokenCache
from pipeline.layout import READERS_DIR as READERS
from pipeline.mixture import run_mixture
from pipeline.run import mixed_source_files
from pipeline.sampling import FIRST_PASS, MIN_HOLDS, SampleRule, choose_rule, sample_units
from pipeline.sampling.estimate import sample_rules
from pipeline.tokenizer import load_tokenizer


def test_sample_units_are_uniform_and_stable():
    h = np.arange(200_000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    u = sample_units(h)
    assert u.min() >= 0 and u.max() < 1 and np.array_equal(u, sample_units(h))
    counts, _ = np.histogram(u, bins=10, range=(0, 1))
    assert counts.min() > 19_000 and counts.max() < 21_000


def test_a_document_gets_the_largest_rate_its_length_allows():
    rule = SampleRule(bounds=(100, 1000), rates=(0.1, 0.5, 0.9), chars_per_token=(2.0, 5.0))
    # 150 characters: 30 to 76 tokens, bucket 0 only; 1000 characters: 200 to 501 tokens, bucket 1;
    # 400 characters: 80 to 201 tokens, buckets 0 or 1; 4000: 800 to 2001, buckets 1 or 2.
    assert rule.rate_for_chars([150, 1000, 400, 4000]).tolist() == [0.1, 0.5, 0.5, 0.9]
    assert SampleRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


def test_no_rule_when_a_source_does_not_hold_enough():
    args = ([1000, 1000], [2000, 2000], [50, 50], (3.0, 5.0), [100])
    assert choose_rule(*args[:1], [int(MIN_HOLDS * 1000) - 1, 0], *args[2:]) is None
    # A group of buckets whose sample the mixture takes few documents of: too noisy, tokenize whole.
    assert choose_rule([1000, 1000], [40_000, 40_000], [400, 100_000], (3.0, 5.0), [100], groups=[0, 1]) is None
    assert choose_rule([1000, 1000], [40_000, 40_000], [400, 100_000], (3.0, 5.0), [100], groups=[0, 0]) is not None


def test_a_first_pass_aims_low():
    first = choose_rule([1000, 1000], [40_000, 40_000], [400_000, 400_000], (3.0, 5.0), [100])
    assert first.rates == pytest.approx((0.025 * FIRST_PASS,) * 2)  # no margin: a top-up adds what is short
    odd = choose_rule([1000, 0, 1000], [40_000, 40_000, 0], [400_000, 400_000, 0], (3.0, 5.0), [100, 200])
    assert odd.rates == pytest.approx((0.025 * FIRST_PASS, 0.0, 2000 / 80_000 * FIRST_PASS))  # unseen: natural rate


def digest(folder):
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder)) if n.endswith((".bin", ".idx"))}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampled")
    sampled_corpus(tmp / "data", "a", 4, 8000, 1)
    sampled_corpus(tmp / "data", "b", 4, 8000, 2)
    # Each source holds ~1.5M tokens in 32,000 documents; the mixture takes 240k of a and 160k of b
    # (6x and 9x), thousands of documents in each length group: what a real run's sample looks like.
    m = run_mixture(sampled_mixture(tmp, 400_000), str(tmp / "data"), str(tmp / "out"), str(tmp / "cache"), IN_PROCESS)
    return tmp, m


def test_only_a_sample_is_tokenized(sampled):
    _, m = sampled
    for name, s in m["sources"].items():
        t = s["tokenized"]
        assert t["sampled"], name
        assert t["tokens"] <= 1.1 * s["achieved_tokens"], name  # 1.07x; not the 11-16x the sources hold
        assert s["accounting"]["not_tokenized"] > 0
        acc = s["accounting"]
        kept_or_not = acc["selected_documents"] + acc["dropped_by_sampling"] + acc["rejected"] + acc["excluded_subset"]
        assert acc["read"] == kept_or_not


def test_the_first_sample_gives_way_to_its_top_up(sampled):
    """The first sample's cache is removed once its top-up (which copied it: tests/cache/test_cache.py) is built;
    a rerun finds the top-up for the first rule too, tokenizes nothing and writes the same bytes.
    (Runs before the tests below build whole caches, which would serve every rule.)"""
    tmp, m = sampled
    cfg = sampled_mixture(tmp, 400_000)
    files = mixed_source_files(cfg, str(tmp / "data"))
    tok = load_tokenizer(cfg.tokenizer_path)
    for name, first in sample_rules(cfg, files, tok).items():
        final = SampleRule.from_dict(m["sources"][name]["tokenized"]["sample_rule"])
        assert final != first and final.covers(first), name  # the fixture's sources were topped up
        spec = next(s.spec for s in cfg.sources if s.name == name)
        left = os.listdir(tmp / "cache" / name)
        assert [TokenCache(str(tmp / "cache" / name / d)).rule for d in left] == [final], name
        assert TokenCache.find(str(tmp / "cache"), spec, files[name], tok, first).rule == final
    finished = {p: p.stat().st_mtime_ns for p in (tmp / "cache").rglob("cache.json")}

    class SeesReadMarks:  # a progress display, told when packing starts: the run's samples are marked read
        def tokenizing(self, *_): pass
        def finished(self, *_): pass
        def packing(self, *_): self.marked = sorted(p.parts[-4] for p in (tmp / "cache").rglob(f"{READERS}/*.json"))

    seen = SeesReadMarks()
    again = run_mixture(cfg, str(tmp / "data"), str(tmp / "rerun"), str(tmp / "cache"), IN_PROCESS, seen)
    assert again["plan_hash"] == m["plan_hash"] and digest(tmp / "rerun") == digest(tmp / "out")
    assert {p: p.stat().st_mtime_ns for p in (tmp / "cache").rglob("cache.json")} == finished
    assert seen.marked == sorted(m["sources"])  # another run would not remove them meanwhile
    assert not list((tmp / "cache").rglob(READERS))  # and the marks go when the run ends


def test_exact_per_source_and_per_bucket(sampled):
    _, m = sampled
    for name, s in m["sources"].items():
        assert abs(s["achieved_tokens"] - s["requested_tokens"]) < 50, name
        for b in s["buckets"]:
            assert abs(b["achieved_share"] - b["requested_share"]) < 0.001, (name, b["bucket"])
        long = s["buckets"][-1]
        # Upweighted from the estimated natural fraction, as for a source tokenized whole.
        assert long["requested_tokens"] == pytest.approx(
            2 * s["requested_tokens"] * long["available_tokens"] / s["available_tokens"], rel=0.01)


def test_available_figures_are_estimates_close_to_the_truth(sampled):
    tmp, m = sampled
    whole = run_mixture(sampled_mixture(tmp, 400_000, whole=True), str(tmp / "data"), str(tmp / "whole"),
                        str(tmp / "cache"), IN_PROCESS)
    for name, s in m["sources"].items():
        exact = whole["sources"][name]
        assert not exact["tokenized"]["sampled"]
        assert s["available_tokens"] == pytest.approx(exact["available_tokens"], rel=0.05)
        for b, e in zip(s["buckets"], exact["buckets"]):
            assert b["available_tokens"] == pytest.approx(e["available_tokens"], rel=0.1)


def test_a_whole_cache_gives_the_same_shards(sampled):
    """With whole caches already there (built by the test above or here), the sampled mixture reads
    them through its rule instead of tokenizing: the shards are the same bytes."""
    tmp, m = sampled
    data, cache = str(tmp / "data"), str(tmp / "cache")
    run_mixture(sampled_mixture(tmp, 400_000, whole=True), data, str(tmp / "whole2"), cache, IN_PROCESS)
    again = run_mixture(sampled_mixture(tmp, 400_000), data, str(tmp / "again"), cache, IN_PROCESS)
    assert digest(tmp / "again") == digest(tmp / "out")
    assert again["plan_hash"] == m["plan_hash"]
    for name, s in again["sources"].items():
        assert s["tokenized"] == m["sources"][name]["tokenized"]
        assert s["cache_fingerprint"] != m["sources"][name]["cache_fingerprint"]  # served by the whole cache


def test_a_sample_that_cannot_be_topped_up_falls_back_to_the_whole_source(tmp_path, caplog):
    # The estimate reads the first documents of each file: make them unlike the rest (many tokens per
    # character), so it overestimates the source (1.41M tokens for 1.21M) and samples a source that
    # holds 3.7x what the mixture takes; the first pass, which reads it all, sees that it holds less
    # than MIN_HOLDS times the need: it is tokenized whole.
    sampled_corpus(tmp_path / "data", "a", 2, 8000, 3)
    sampled_corpus(tmp_path / "data", "b", 2, 8000, 4)
    for k in range(2):
        path = tmp_path / "data" / "a" / f"part-{k}.jsonl"
        lines = path.read_text().splitlines()
        head = [json.dumps({"text": " ".join(str(random.Random(i).getrandbits(40)) for _ in range(40))})
                for i in range(1000)]
        path.write_text("\n".join(head + lines) + "\n")
    cfg = sampled_mixture(tmp_path, 540_000)  # 324k of a
    assert sample_rules(cfg, mixed_source_files(cfg, str(tmp_path / "data")), load_tokenizer(cfg.tokenizer_path))["a"]
    m = run_mixture(cfg, str(tmp_path / "data"), str(tmp_path / "out"), str(tmp_path / "cache"), IN_PROCESS)
    assert "cannot be topped up" in caplog.text and "tokenizing them whole" in caplog.text
    a = m["sources"]["a"]
    assert not a["tokenized"]["sampled"] and abs(a["achieved_tokens"] - a["requested_tokens"]) < 50
