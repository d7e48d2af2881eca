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
