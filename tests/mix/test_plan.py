"""Plan math: pure functions, no Beam."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import LongDocPolicy
from pipeline.mix.plan import bucket_of, bucket_targets, long_fraction, split_exact


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**13), st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_split_exact_sums_and_is_proportional(total, weights):
    out = split_exact(total, weights)
    if sum(weights) == 0:
        assert out == [0] * len(weights)
        return
    assert sum(out) == total
    for o, w in zip(out, weights):
        assert abs(o - total * w / sum(weights)) < 1


def test_bucket_of_bounds_are_lower_inclusive():
    bounds = [2048, 4096, 16384]
    assert [bucket_of(n, bounds) for n in (1, 2047, 2048, 4096, 16383, 16384)] == [0, 0, 1, 2, 2, 3]


def test_natural_proportions_without_policy():
    assert bucket_targets(1000, [600, 300, 100], [10, 20]) == [600, 300, 100]


def test_long_policy_moves_tokens_inside_the_source():
    policy = LongDocPolicy(threshold=4096, factor=2.0, cap=0.8)
    bounds = [2048, 4096, 16384]
    available = [500, 300, 150, 50]  # long = buckets 2 and 3: f0 = 0.2
    t = bucket_targets(1000, available, bounds, policy)
    assert sum(t) == 1000  # the source's share does not move
    assert t[2] + t[3] == 400  # min(0.8, 2 * 0.2) = 0.4 of the source
    assert t[2] / t[3] == pytest.approx(3.0)  # long buckets keep their natural proportions
    assert t[0] / t[1] == pytest.approx(5 / 3, rel=1e-2)


def test_long_policy_caps_and_explicit_fraction():
    assert long_fraction(0.6, LongDocPolicy(factor=2.0, cap=0.8)) == 0.8
    assert long_fraction(0.1, LongDocPolicy(fraction=0.5)) == 0.5
    # No long documents at all: nothing to upweight, everything stays short.
    assert bucket_targets(100, [10, 0], [4096], LongDocPolicy()) == [100, 0]


def test_upweighting_never_lowers_a_source_above_the_cap():
    """The Pile's natural long fraction in a stage-2 dry run is 0.816: the cap (0.8) must not cut it."""
    policy = LongDocPolicy(threshold=4096, factor=2.0, cap=0.8)
    available = [92, 92, 400, 416]  # f0 = 0.816
    t = bucket_targets(1000, available, [2048, 4096, 16384], policy)
    assert t[2] + t[3] == 816 and sum(t) == 1000


def test_the_rule_can_be_switched_off_per_source(tmp_path):
    from pipeline.config import load_mixture
    from pipeline.mix.plan import make_plan

    path = tmp_path / "mix.yaml"
    path.write_text("""
name: m
total_tokens: 1000
seq_len: 16
tokenizer: tok.json
length_buckets: [4096]
long_documents: {threshold: 4096, factor: 2.0, cap: 0.8}
sources:
  - {name: a, kind: files, root: a, paths: ["*.jsonl"], weight: 0.5, max_repetition: 10}
  - {name: b, kind: files, root: b, paths: ["*.jsonl"], weight: 0.5, max_repetition: 10, long_documents: false}
""")
    (tmp_path / "tok.json").write_text("{}")
    cfg = load_mixture(str(path))
    available = {"a": ([800, 200], [80, 2]), "b": ([800, 200], [80, 2])}
    plans = {p.source: [b.target_tokens for b in p.buckets] for p in make_plan(cfg, available)}
    assert plans == {"a": [300, 200], "b": [400, 100]}  # a: long 0.2 -> 0.4; b: natural 0.2
