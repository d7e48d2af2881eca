"""Sizing a top-up from every document the first pass read (topup.py)."""

import numpy as np
import pytest

from pipeline.config import LongDocPolicy
from pipeline.mix.plan import bucket_targets, split_exact
from pipeline.sampling.topup import (
    SLACK,
    UNIT_BINS,
    SampleView,
    Unseen,
    char_bins,
    predict_top_up,
    unit_bins,
    unit_edge,
)

BOUNDS = (1024,)


def test_unit_bins_split_the_documents_at_each_rate_of_the_grid():
    u = np.random.default_rng(1).random(200_000)
    bins = unit_bins(u)
    assert bins.min() >= 0 and bins.max() < UNIT_BINS
    for j in (0, 5, 32, 100, 300):
        assert np.array_equal(bins >= j, u < unit_edge(j)), j
    assert unit_bins(np.array([0.0]))[0] == UNIT_BINS - 1
    assert char_bins(np.array([0, 1, 2, 3, 4, 1000]))[:5].tolist() == [0, 0, 2, 3, 4]


def test_unseen_round_trips_and_merges():
    rng = np.random.default_rng(2)
    a, b = Unseen(), Unseen()
    a.add(rng.random(1000), rng.integers(1, 10**6, 1000))
    b.merge(a.to_dict())
    b.merge(a.to_dict())
    assert np.array_equal(b.docs, 2 * a.docs) and np.array_equal(b.chars, 2 * a.chars)
    assert a.docs.sum() == 1000 and np.array_equal(Unseen.from_dict(a.to_dict()).chars, a.chars)


def population(n, seed):
    """A web-like source with a heavy tail: a few documents of a million tokens hold a fifth of it."""
    rng = np.random.default_rng(seed)
    chars = (rng.pareto(1.2, n) * 800 + 100).astype(np.int64)
    chars[rng.choice(n, 6, replace=False)] = 4_000_000
    tokens = np.maximum(1, np.round(chars / rng.uniform(3.5, 4.5, n))).astype(np.int64)
    return rng.random(n), chars, tokens


def candidates(units, tokens, rates):
    bucket = np.searchsorted(np.asarray(BOUNDS), tokens, side="right")
    return [int(tokens[(bucket == b) & (units < r)].sum()) for b, r in enumerate(rates)]


def plan_sees(units, tokens, rates, targets_for):
    """(candidates, targets) per bucket, as the plan will see them after the top-up."""
    got = candidates(units, tokens, rates)
    return got, targets_for([round(c / r) for c, r in zip(got, rates)])


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_heavy_tailed_source_is_topped_up_to_the_smallest_rates_the_plan_allows(seed):
    units, chars, tokens = population(60_000, seed)
    first = (0.06, 0.06)
    view = SampleView(2)
    view.add(units, chars, tokens, units < first[0], BOUNDS)  # the first pass left the rest, by unit and length
    target = int(tokens.sum() * 0.1)
    for policy in (None, LongDocPolicy(threshold=1024, factor=2.0, cap=0.8)):
        def targets_for(available):
            return bucket_targets(target, available, BOUNDS, policy)

        groups = [0, 0] if policy is None else [0, 1]
        rates = predict_top_up(first, groups, [0, 1], view, BOUNDS, targets_for, 4.0)
        assert rates is not None and all(r >= f for r, f in zip(rates, first))
        got, planned = plan_sees(units, tokens, rates, targets_for)
        assert all(c >= t for c, t in zip(got, planned)), (policy, got, planned)  # enough
        for g in set(groups):  # and one step of the grid lower would not be (within the slack)
            lower = tuple(unit_edge(round(-np.log2(r) * 32) + 1) if gg == g else r for r, gg in zip(rates, groups))
            got, planned = plan_sees(units, tokens, lower, targets_for)
            assert any(c < (1 + 2 * SLACK) * t for c, t, gg in zip(got, planned, groups) if gg == g), (policy, g)


def test_a_source_the_prediction_says_holds_too_little_is_tokenized_whole():
    units, chars, tokens = population(20_000, 6)
    view = SampleView(2)
    view.add(units, chars, tokens, units < 0.2, BOUNDS)
    def targets_for(available):
        return split_exact(int(tokens.sum() * 0.3), available)

    assert predict_top_up((0.2, 0.2), [0, 0], [0], view, BOUNDS, targets_for, 4.0) is None
    assert predict_top_up((0.2, 0.2), [0, 0], [0], view, BOUNDS, targets_for, 3.0) is not None


def test_a_short_group_rises_even_where_the_prediction_says_it_fits():
    units, chars, tokens = population(20_000, 7)
    view = SampleView(2)
    view.add(units, chars, tokens, units < unit_edge(64), BOUNDS)
    def targets_for(available):
        return split_exact(int(tokens.sum() * 0.01), available)

    rates = predict_top_up((unit_edge(64),) * 2, [0, 0], [1], view, BOUNDS, targets_for, 4.0)
    assert rates == (unit_edge(63),) * 2
    assert predict_top_up((unit_edge(64),) * 2, [0, 0], [], view, BOUNDS, targets_for, 4.0) == (unit_edge(64),) * 2


def test_a_group_that_meets_its_targets_keeps_its_rates():
    units, chars, tokens = population(20_000, 8)
    view = SampleView(2)
    view.add(units, chars, tokens, units < 0.05, BOUNDS)
    def targets_for(available):
        return [int(tokens.sum() * 0.08), 0]  # nothing asked of the long bucket

    rates = predict_top_up((0.05, 0.0), [0, 1], [0], view, BOUNDS, targets_for, 4.0)
    assert rates[0] > 0.05 and rates[1] == 0.0
