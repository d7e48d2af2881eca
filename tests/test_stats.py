"""`mixprep stats`: exact counts from a cache, estimates without one, and the epochs a mixture needs."""

import json
import os

import pytest

from conftest import SAMPLES
from test_cli import built, mixprep  # noqa: F401  (the shared small mixture)
from test_sampling import IN_PROCESS, corpus, mixture
from pipeline.cache import TokenCache, cache_dir
from pipeline.config import load_mixture
from pipeline.mixture import run_mixture
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


def test_says_what_a_run_would_tokenize(built, tmp_path):
    cfg = load_mixture(built["mixture"])
    assert [st.tokenizes for st in source_stats(cfg, SAMPLES, built["cache"])] == ["cached", "cached"]
    fresh = source_stats(cfg, SAMPLES, str(tmp_path / "none"))
    assert [(st.tokenizes, st.tokenizes_tokens) for st in fresh] == [("whole", st.tokens) for st in fresh]
    assert "every document (it holds under 4x" in stats_table(cfg, fresh)
    # Sources holding 6x and 9x what is taken (tests/test_sampling.py's corpus): a first sample of
    # about FIRST_PASS of the need, then top-ups; a run agrees, and its caches then serve it.
    corpus(tmp_path / "data", "a", 4, 8000, 1)
    corpus(tmp_path / "data", "b", 4, 8000, 2)
    cfg = mixture(tmp_path, 400_000)
    stats = {st.name: st for st in source_stats(cfg, str(tmp_path / "data"), str(tmp_path / "cache"))}
    m = run_mixture(cfg, str(tmp_path / "data"), str(tmp_path / "out"), str(tmp_path / "cache"), IN_PROCESS)
    for name, st in stats.items():
        assert st.tokenizes == "sample"
        need = m["sources"][name]["requested_tokens"]
        assert 0.6 * need < st.tokenizes_tokens < m["sources"][name]["tokenized"]["tokens"]
    text = stats_table(cfg, list(stats.values()))
    assert "a first sample (" in text and "top-ups bring it to" in text
    again = source_stats(cfg, str(tmp_path / "data"), str(tmp_path / "cache"))
    assert [st.tokenizes for st in again] == ["cached", "cached"]
