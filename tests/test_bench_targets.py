"""scripts/bench.py's target table: paired ratios are medians of per-pair ratios (the machine's speed
moves between measurements, so a pipeline run is compared with the raw ceiling measured just before)."""

import os
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench  # noqa: E402


def run(tok_per_s, peak=2**30, workers=2):
    return {"tok_per_s": tok_per_s, "peak_rss_bytes": peak, "workers": workers, "seconds": 1.0, "backend": "tiktoken",
            "command": "mixprep run", "tokens_taken": 9, "tokens_tokenized": 10, "sampled_sources": 0,
            "runs": [{"tok_per_s": tok_per_s}]}


def results(fast_pairs, tok_pairs):
    return {
        "raw": {"tokenizers encode_batch_fast (2 threads)": {"tok_per_s": 1.0e6, "seconds": 1.0},
                "tokenizers process pool (2 x 1 thread)": {"tok_per_s": 1.5e6, "seconds": 1.0}},
        "best_raw_tokenizers": 1.5e6, "raw_fast": 4.0e6, "raw_fast_speedup": 1.5,
        "pipeline": {"all_cores": run(3.0e6), "one_worker": run(2.0e6, workers=1),
                     "all_cores_tokenizers": run(1.4e6)},
        "fast_pairs": fast_pairs, "fast_pairs_cores": 2, "tokenizers_pairs": tok_pairs,
    }


def fast(raw2, pipe2, raw1, pipe1):
    return {"raw_fast_2_tok_per_s": raw2, "pipeline_2_tok_per_s": pipe2, "raw_fast_1_tok_per_s": raw1,
            "pipeline_1_tok_per_s": pipe1}


def by_name(r):
    return {name.split(",")[0]: (value, ok) for name, _, value, _, ok in bench.targets(r)}


def test_paired_ratios_are_medians_of_the_pairs():
    r = results(
        [fast(4e6, 2.4e6, 3e6, 2.0e6), fast(5e6, 3.5e6, 3e6, 2.1e6), fast(4e6, 3.0e6, 2e6, 1.5e6)],
        [{"pool_tok_per_s": 1.0e6, "pipeline_tok_per_s": 1.1e6},
         {"pool_tok_per_s": 2.0e6, "pipeline_tok_per_s": 1.2e6},
         {"pool_tok_per_s": 1.5e6, "pipeline_tok_per_s": 1.4e6}])
    t = by_name(r)
    assert t["pipeline (fast encoder) / raw fast encoder"] == (pytest.approx(0.70), True)  # 0.60, 0.70, 0.75
    # efficiency 0.70 on 2 cores (median) over 0.70 on 1 (0.667, 0.70, 0.75): 1.0
    assert t["pipeline 1->2 workers speed-up / raw encoder's 1->2 speed-up"] == (pytest.approx(1.0), True)
    # a raw path faster than a pair's pool counts instead of it: 1.1 / 1.0 -> 1.1 / 1.0 (encode_batch_fast)
    assert t["pipeline (tokenizers backend) / best raw tokenizers"] == (pytest.approx(0.933, abs=1e-3), True)


def test_a_pair_below_the_bound_fails_the_target():
    r = results([fast(5e6, 3.0e6, 3e6, 2.9e6)] * 3, [{"pool_tok_per_s": 2.0e6, "pipeline_tok_per_s": 1.2e6}] * 3)
    t = by_name(r)
    assert t["pipeline (fast encoder) / raw fast encoder"] == (pytest.approx(0.6), False)
    assert t["pipeline 1->2 workers speed-up / raw encoder's 1->2 speed-up"][1] is False  # 0.6 / 0.967
    assert t["pipeline (tokenizers backend) / best raw tokenizers"] == (pytest.approx(0.6), False)
    assert "paired runs" in bench.markdown({**r, "started": "t", "machine": "m", "tokenizer": {"vocab_size": 1},
                                            "corpus": {"bytes": 1, "documents": 1, "files": 1}})


def test_the_goals_at_4x_input_and_the_limit_they_meet():
    r = results([fast(4e6, 3.0e6, 3e6, 2.0e6)], [{"pool_tok_per_s": 1.0e6, "pipeline_tok_per_s": 1.1e6}])
    r["read_ceiling"] = 80e6
    r["raw"].update({"read ceiling: files read and parsed, no tokenizing (2 processes)":
                     {"tokens": 80_000_000, "seconds": 1.0, "tok_per_s": 80e6},
                     "gigatoken encode (2 threads)": {"tokens": 80_000_000, "seconds": 1.0, "tok_per_s": 80e6},
                     "tiktoken encode_ordinary_batch (2 threads)": {"tokens": 80_000_000, "seconds": 20.0,
                                                                    "tok_per_s": 4e6}})
    bench.ideal_bound(r, 2)
    assert r["ideal"]["gigatoken"]["tok_per_s"] == pytest.approx(40e6)  # 1 s read + 1 s encode
    assert r["ideal"]["tiktoken"]["seconds"] == pytest.approx(21.0)
    r["pipeline"].update({"all_cores_tiktoken": run(1.0e6), "all_cores_4x_input": run(24e6),
                          "all_cores_4x_input_tiktoken": run(4e6),
                          "fixed_cost_tiny_input_gigatoken": {**run(1e6), "seconds": 6.0, "tokens": 10},
                          "fixed_cost_tiny_input_tiktoken": {**run(1e6), "seconds": 7.0, "tokens": 10}})
    got = {name: (v, ok) for name, _, v, _, ok in bench.targets(r)}
    assert got["whole run, default backend / whole run, tiktoken (all cores)"] == (pytest.approx(3.0), False)
    assert got["whole run, default backend / whole run, tiktoken (all cores), 4x input"] == (pytest.approx(6.0), True)
    assert got["whole run, default backend / read ceiling (all cores), 4x input"] == (pytest.approx(0.3), False)
    text = "\n".join(bench.limits(r))
    assert "Fixed cost" in text and "gigatoken 6.0 s" in text and "tiktoken 7.0 s" in text
    assert "Ideal run, gigatoken" in text and "40.00M tok/s, 0.50x the read ceiling" in text
    # 1x: 6 s fixed + 2 s ideal for 80M tokens = 10M tok/s; 4x: 6 + 8 s for 320M = 22.9M
    assert "Bound at 1x input, gigatoken: fixed cost 6.0 s + ideal 2.0 s = 10.00M tok/s: 10.00x" in text
    assert "Bound at 4x input, gigatoken: fixed cost 6.0 s + ideal 8.0 s = 22.86M tok/s: 5.71x" in text


def test_dedups_cost_is_read_from_the_runs_of_the_same_bench():
    r = results([fast(4.0e6, 3.0e6, 2.0e6, 1.8e6)], [])
    r["raw"]["content key, nfc_whitespace (1 thread)"] = {"tok_per_s": 5.0e6, "seconds": 0.5}
    r["raw"]["gigatoken encode (1 thread)"] = {"tok_per_s": 2.5e6, "seconds": 2.0}
    r["pipeline"]["all_cores_dedup_off"] = {**run(3.0e6), "seconds": 10.0}
    r["pipeline"]["all_cores_dedup_exact"] = {**run(3.0e6, peak=2**31), "seconds": 11.0,
                                              "dedup_removed": {"documents": 7, "tokens": 700}}
    text = "\n".join(bench.dedup_lines(r))
    assert "(0.25x the encode time)" in text
    assert "exact dedup: 11.0 s against 10.0 s without (1.10x), peak RSS 2.00 against 1.00 GiB" in text
    assert "removed 7 documents, 700 tokens" in text and "exact + near" not in text  # that run is absent
    assert bench.dedup_lines({"pipeline": {}}) == []
