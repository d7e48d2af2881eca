"""`mixprep stats`: exact counts from a cache, estimates without one, and the epochs a mixture needs."""

import dataclasses
import json
import os

import pytest
from conftest import IN_PROCESS, ROOT, SAMPLES, TOKENIZER, mixprep, sampled_corpus, sampled_mixture

from pipeline.cache import TokenCache
from pipeline.config import load_mixture
from pipeline.layout import cache_dir
from pipeline.mixture import run_mixture
from pipeline.stats import load_published_sizes, published_fit, published_table, source_stats, stats_table


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
    # Sources holding 6x and 9x what is taken (conftest's sampled_corpus): a first sample of
    # about FIRST_PASS of the need, then top-ups; a run agrees, and its caches then serve it.
    sampled_corpus(tmp_path / "data", "a", 4, 8000, 1)
    sampled_corpus(tmp_path / "data", "b", 4, 8000, 2)
    cfg = sampled_mixture(tmp_path, 400_000)
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


def test_stage1_at_full_size_fits_the_published_sizes():
    """The bundled stage 1 carries an answer for RefinedWeb: 560B of a 500-650B-token dataset needs up to
    1.12 epochs, and its max_repetition of 1.2 allows them (docs/RECIPE.md)."""
    sizes = load_published_sizes(os.path.join(ROOT, "mixtures", "published-sizes.yaml"))
    cfg = load_mixture(os.path.join(ROOT, "mixtures", "stage1.yaml"), {"tokenizer": TOKENIZER})
    fits = {f.name: f for f in published_fit(cfg, sizes)}
    assert set(fits) == {"refinedweb", "c4", "redpajama", "pile"}
    assert all(f.verdict == "fits" for f in fits.values())
    rw = fits["refinedweb"]
    assert (rw.target, rw.low, rw.high) == (560 * 10**9, 500 * 10**9, 650 * 10**9)
    assert rw.epochs[1] == pytest.approx(1.12) and rw.max_repetition == 1.2
    # Excluded subsets are taken off: RedPajama without c4 and common_crawl, The Pile without Pile-CC.
    assert fits["redpajama"].low == 157 * 10**9 and fits["pile"].low == 246 * 10**9


def test_a_source_that_may_fall_short_is_said_with_what_would_fit(tmp_path):
    sizes = load_published_sizes(os.path.join(ROOT, "mixtures", "published-sizes.yaml"))
    cfg = load_mixture(os.path.join(ROOT, "mixtures", "stage1.yaml"), {"tokenizer": TOKENIZER})
    once = dataclasses.replace(cfg, sources=tuple(dataclasses.replace(s, max_repetition=1.0) for s in cfg.sources))
    verdicts = {f.name: f.verdict for f in published_fit(once, sizes)}
    assert verdicts["refinedweb"].startswith("fits if it holds >= 560,000,000,000 tokens")
    assert "max_repetition >= 1.12" in verdicts["refinedweb"] and verdicts["pile"] == "fits"
    twice = dataclasses.replace(once, total_tokens=2 * 10**12)
    table = published_table(twice, published_fit(twice, sizes))
    assert "refinedweb  1,120,000,000,000" in table and "short: allow max_repetition >= 2.24" in table


def test_stats_published_on_the_command_line():
    rc, out, err = mixprep("stats", "--mixture", "stage2", "--published")
    assert rc == 0, err
    assert "stage2 at 100,000,000,000 tokens against the sources' published sizes" in out
    assert out.count(" fits") == 5
