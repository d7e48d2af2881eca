"""Plan a mixture: exact token targets per (source, length bucket), before any heavy work.

Pure functions over the caches' statistics, testable without Beam:

    targets = split_exact(total_tokens, weights)          # source targets, summing exactly
    buckets = bucket_targets(target, available, bounds, policy)
    rate = target / available                             # epochs of that bucket; checked

Shares are shares of tokens. A source's buckets keep their natural proportions unless a long-document
policy moves tokens from short to long buckets inside the source (the source's share never moves).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Sequence

from ..config import LongDocPolicy, MixtureConfig
from ..errors import MixprepError

__all__ = ["PlanError", "BucketPlan", "SourcePlan", "bucket_of", "bucket_label", "split_exact", "bucket_targets",
           "make_plan"]


class PlanError(MixprepError):
    """The mixture asks for something the sources cannot give (e.g. beyond max_repetition)."""


@dataclasses.dataclass(frozen=True)
class BucketPlan:
    index: int
    label: str  # e.g. "[2048, 4096)"
    available_tokens: int
    available_docs: int
    target_tokens: int

    @property
    def rate(self) -> float:
        """Epochs of this bucket the mixture takes (target / available)."""
        return self.target_tokens / self.available_tokens if self.available_tokens else 0.0


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    source: str
    category: str
    weight: float
    target_tokens: int
    buckets: tuple[BucketPlan, ...]

    @property
    def available_tokens(self) -> int:
        return sum(b.available_tokens for b in self.buckets)


def bucket_of(n_tokens: int, bounds: Sequence[int]) -> int:
    """Bucket index of a document: bucket i holds [bounds[i-1], bounds[i]) tokens.

    >>> [bucket_of(n, [2048, 4096]) for n in (1, 2047, 2048, 4095, 4096, 10**6)]
    [0, 0, 1, 1, 2, 2]
    """
    return bisect.bisect_right(bounds, n_tokens)


def bucket_label(index: int, bounds: Sequence[int]) -> str:
    lo = bounds[index - 1] if index > 0 else 1
    return f"[{lo}, {bounds[index]})" if index < len(bounds) else f"[{lo}, inf)"


def split_exact(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (largest remainder).

    >>> split_exact(10, [1, 1, 1])
    [4, 3, 3]
    >>> split_exact(100, [0.71, 0.29, 0.0])
    [71, 29, 0]
    """
    wsum = float(sum(weights))
    if total == 0 or wsum == 0:
        return [0] * len(weights)
    exact = [total * w / wsum for w in weights]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def long_fraction(natural: float, policy: LongDocPolicy) -> float:
    """The long buckets' token fraction under the policy (docs/RECIPE.md): max(f0, min(cap, factor * f0)).

    Upweighting raises the long fraction up to the cap and never lowers it: a source already above
    the cap keeps its natural fraction. An explicit ``fraction`` is taken as it is.

    >>> policy = LongDocPolicy(threshold=4096, factor=2.0, cap=0.8)
    >>> long_fraction(0.1, policy), long_fraction(0.5, policy), long_fraction(0.816, policy)
    (0.2, 0.8, 0.816)
    """
    if policy.fraction is not None:
        return policy.fraction
    return max(natural, min(policy.cap, policy.factor * natural))


def bucket_targets(
    target: int, available: Sequence[int], bounds: Sequence[int], policy: LongDocPolicy | None = None
) -> list[int]:
    """Split a source's token target over its length buckets.

    Natural proportions by default; with a policy, the buckets at or above ``policy.threshold`` get
    ``long_fraction`` of the target between them (in their natural proportions), the rest the remainder.
    """
    if policy is None or sum(available) == 0:
        return split_exact(target, available)
    first_long = bucket_of(policy.threshold, bounds)
    short, long = available[:first_long], available[first_long:]
    f0 = sum(long) / sum(available)
    f = long_fraction(f0, policy) if sum(long) else 0.0
    long_target = round(target * f)
    return split_exact(target - long_target, short) + split_exact(long_target, long)


def make_plan(cfg: MixtureConfig, available: dict[str, tuple[list[int], list[int]]]) -> list[SourcePlan]:
    """Targets for every source with weight > 0; ``available[source] = (tokens, docs)`` per bucket.

    Raises PlanError, naming the source and bucket, when a target needs more epochs than
    ``max_repetition`` allows or a source has nothing to give.
    """
    bounds = cfg.bucket_bounds
    sources = [s for s in cfg.sources if s.weight > 0]
    source_targets = split_exact(cfg.total_tokens, [s.weight for s in sources])
    plans = []
    for s, target in zip(sources, source_targets):
        tokens, docs = available[s.name]
        if sum(tokens) == 0:
            raise PlanError(f"source {s.name!r} has no tokens (all its documents were rejected or excluded) "
                            f"but its weight is {s.weight:g}: fix the source or set its weight to 0.")
        targets = bucket_targets(target, tokens, bounds, cfg.long_policy(s.name))
        buckets = tuple(
            BucketPlan(i, bucket_label(i, bounds), tokens[i], docs[i], targets[i]) for i in range(len(tokens))
        )
        for b in buckets:
            if b.target_tokens and not b.available_tokens:
                raise PlanError(f"source {s.name!r}, bucket {b.label} tokens: asked for {b.target_tokens:,} "
                                "tokens but the source has no documents of that length.")
            if b.rate > s.max_repetition + 1e-12:
                raise PlanError(
                    f"source {s.name!r}, bucket {b.label} tokens: the mixture asks for {b.target_tokens:,} "
                    f"tokens but the source has {b.available_tokens:,} ({b.available_docs:,} documents): "
                    f"{b.rate:.3f} epochs, more than max_repetition={s.max_repetition:g}. Lower "
                    "total_tokens or this source's weight, or raise its max_repetition."
                )
        plans.append(SourcePlan(s.name, s.category, s.weight, target, buckets))
    return plans
