"""`mixprep stats`: exact counts from a cache, estimates without one, and the epochs a mixture needs."""

import json
import os

import pytest

from conftest import SAMPLES
from test_cli import built, mixprep  # noqa: F401  (the shared small mixture)
from pipeline.cache import TokenCache, cache_dir
from pipeline.config import load_mixture
from pipeline.stats import source_stats, stats_table


def test_exact_from_the_cache(built):
    rc, out, err = mixprep("stats", "--mixture", built["mixture"], "--data-root", SAMPLES, "--cache", built["cache"])
    assert rc == 0, err
    manifest = json.load(open(os.path.join(built["out"], "manifest.json")))
    for name, s in manifest["sources"].items():
        st = TokenCache(cache_dir(built["cache"], name, s["cache_fingerprint"])).stats
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert f"{st['documents']:,}" in row and f"{st['tokens']:,}" in row and "exact (cache)" in row
        second = out[out.index("Tokens per length bucket"):]
        epochs = next(line for line in second.splitlines() if line.startswith(name + " "))
        assert f"{s['requested_tokens']:,}" in epochs and f"{s['requested_tokens'] / st['tokens']:.3f}" in epochs
    assert "ArXiv" in out  # pile's subsets
    assert "estimated" not in out


def test_estimated_without_a_cache_says_so(built, tmp_path):
    cfg = load_mixture(built["mixture"])
    est = {s.name: s for s in source_stats(cfg, SAMPLES, str(tmp_path / "none"), sample_files=3, sample_docs=50)}
    exact = {s.name: s for s in source_stats(cfg, SAMPLES, built["cache"])}
    for name in ("c4", "pile"):
        assert not est[name].exact and exact[name].exact
        assert est[name].sampled_files == 3 and 0 < est[name].sampled_documents <= 150
        # Tokens come from characters read in the sampled files and a tokens-per-character ratio of
        # their first documents, scaled by bytes to the files not read: one of each source's files is
        # a long-tail file (few, long documents), so the scaling is rough and document counts more so.
        assert est[name].tokens == pytest.approx(exact[name].tokens, rel=0.25)
        assert est[name].documents == pytest.approx(exact[name].documents, rel=0.5)
    text = stats_table(cfg, list(est.values()))
    assert "estimated*" in text and "* c4: no token cache yet; estimated from 3 of 4 files" in text


def test_too_many_epochs_are_flagged(built):
    rc, out, _ = mixprep("stats", "--mixture", built["mixture"], "--data-root", SAMPLES, "--cache", built["cache"],
                         "--total-tokens", 10_000_000)
    assert rc == 0
    assert out.count("exceeds max_repetition=1") == 2
