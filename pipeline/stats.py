"""Source statistics before mixing: documents, tokens, lengths, and the epochs a mixture would need.

    mixprep stats --mixture mixtures/stage1.yaml [--data-root DIR] [--cache DIR] [--total-tokens N]

A source whose token cache exists is counted exactly from it (``cache.json`` and the document
tables). Otherwise the counts are estimated: a few of its files (spread over its folders) are read
whole, the first documents of each are tokenized, and the tokens per character of those documents
(per subset) are scaled to the files read and then, by bytes, to all the source's files. The length
distribution of an estimate is that of the tokenized documents. Either way the report says which.
It also says what `mixprep run` would tokenize of each source: nothing (a cache serves it), every
document, or a first sample (the rules a run would choose, from the same estimate it makes).

    mixprep stats --mixture stage1 --published

plans the mixture at its full size against the sources' published sizes instead
(``mixtures/published-sizes.yaml``, ``published_fit``), before anything is downloaded: a source that
may not hold its share within ``max_repetition`` is said, with what would make it fit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from .cache import TokenCache
from .config import MixtureConfig
from .mix.plan import bucket_label, bucket_targets, split_exact
from .mix.select import candidates_by_bucket
from .outputs.report import median_bin
from .sampling import FIRST_PASS, MIN_HOLDS
from .sampling.estimate import estimate_source, sample_rules
from .sources import SourceFile, list_source_files, normalize_subset
from .tokenizer import LoadedTokenizer, load_tokenizer

__all__ = ["PublishedFit", "SourceStats", "load_published_sizes", "published_fit", "published_table", "source_stats",
           "stats_table"]


@dataclasses.dataclass
class SourceStats:
    name: str
    weight: float
    max_repetition: float
    files: int
    bytes: int
    exact: bool
    documents: int
    tokens: int
    subsets: dict[str, tuple[int, int]]  # subset -> (documents, tokens)
    bucket_tokens: list[int]  # per length bucket of the mixture
    histogram: list[int]  # documents per log2 bin (of the cache, or of the tokenized sample)
    sampled_files: int = 0
    sampled_documents: int = 0  # documents tokenized for the estimate
    bucket_documents: list[int] = dataclasses.field(default_factory=list)  # estimates only
    chars_per_token: list[float] = dataclasses.field(default_factory=list)  # estimates only
    chars_per_token_by_length: list = dataclasses.field(default_factory=list)  # estimates only
    target: int = 0  # tokens the mixture asks of this source
    bucket_target: list[int] = dataclasses.field(default_factory=list)
    # What `mixprep run` would tokenize: "cached" (a cache serves it), "whole", or "sample"
    # (sampling.py), with the tokens of the whole source or of the first sample (before top-ups).
    tokenizes: str = ""
    tokenizes_tokens: int = 0

    @property
    def epochs(self) -> float:
        return self.target / self.tokens if self.tokens else 0.0

    @property
    def bucket_epochs(self) -> list[float]:
        return [t / a if a else (float("inf") if t else 0.0) for t, a in zip(self.bucket_target, self.bucket_tokens)]


def _exact(cache: TokenCache, bounds: Sequence[int]) -> dict:
    st = cache.stats
    tokens, _ = candidates_by_bucket(cache, bounds)
    return {"exact": True, "documents": st["documents"], "tokens": st["tokens"],
            "subsets": {k: (v["documents"], v["tokens"]) for k, v in st["subsets"].items()},
            "bucket_tokens": tokens, "histogram": list(st["histogram"]["documents"])}


def source_stats(cfg: MixtureConfig, data_root: str, cache_root: str, sample_files: int = 4,
                 sample_docs: int = 2000) -> list[SourceStats]:
    """Per source of ``cfg`` (in its order): exact or estimated counts, and what the mixture asks of it."""
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    bounds = cfg.bucket_bounds
    out, listed = [], {}
    for s in cfg.sources:
        files = listed[s.name] = list_source_files(s.spec, data_root)
        cache = TokenCache.find(cache_root, s.spec, files, tokenizer, None, cfg.normalization)
        counts = _exact(cache, bounds) if cache else estimate_source(
            s.spec, files, tokenizer, bounds, sample_files, sample_docs)
        out.append(SourceStats(name=s.name, weight=s.weight, max_repetition=s.max_repetition, files=len(files),
                               bytes=sum(f.size for f in files), **counts))
    mixed = [st for st in out if st.weight > 0]
    for st, target in zip(mixed, split_exact(cfg.total_tokens, [st.weight for st in mixed])):
        st.target = target
        st.bucket_target = bucket_targets(target, st.bucket_tokens, bounds, cfg.long_policy(st.name))
    _what_a_run_tokenizes(cfg, out, listed, cache_root, tokenizer)
    return out


def _what_a_run_tokenizes(cfg: MixtureConfig, stats: Sequence[SourceStats], files: dict[str, list[SourceFile]],
                          cache_root: str, tokenizer: LoadedTokenizer) -> None:
    """Fill ``tokenizes``: the first-pass rules `mixprep run` would choose, and the caches that serve them."""
    rules = sample_rules(cfg, files, tokenizer)
    by_name = {st.name: st for st in stats}
    for s in cfg.sources:
        if s.weight <= 0:
            continue
        st, rule = by_name[s.name], rules[s.name]
        if TokenCache.find(cache_root, s.spec, files[s.name], tokenizer, rule, cfg.normalization):
            st.tokenizes, st.tokenizes_tokens = "cached", 0
        elif rule is None:
            st.tokenizes, st.tokenizes_tokens = "whole", st.tokens
        else:  # candidates are u < rate of a bucket: about rate x the bucket's tokens
            st.tokenizes = "sample"
            st.tokenizes_tokens = round(sum(r * t for r, t in zip(rule.rates, st.bucket_tokens)))


def _median_bin(hist: Sequence[int]) -> str:
    k = median_bin(hist)
    return "-" if k is None else f"[{2 ** k}, {2 ** (k + 1)})"


def stats_table(cfg: MixtureConfig, stats: Sequence[SourceStats]) -> str:
    """The stats as text: a table per source and subset, then the length buckets and epochs."""
    bounds = cfg.bucket_bounds
    labels = [bucket_label(i, bounds) for i in range(len(bounds) + 1)]
    lines = [f"{cfg.name}: {cfg.total_tokens:,} tokens at seq_len {cfg.seq_len:,}; length buckets "
             f"{' '.join(labels)}" + (f" (long from {cfg.long_documents.threshold:,})" if cfg.long_documents else ""),
             ""]
    rows = [("source", "subset", "files", "documents", "tokens", "counted", "mean", "median document")]
    for st in stats:
        how = "exact (cache)" if st.exact else "estimated*"
        mean = f"{st.tokens / st.documents:,.0f}" if st.documents else "-"
        rows.append((st.name, "", f"{st.files:,}", f"{st.documents:,}", f"{st.tokens:,}", how, mean,
                     _median_bin(st.histogram)))
        if len(st.subsets) > 1 or (st.subsets and next(iter(st.subsets)) != ""):
            for sub, (d, t) in st.subsets.items():
                rows.append(("", sub or "-", "", f"{d:,}", f"{t:,}", "", f"{t / d:,.0f}" if d else "-", ""))
    lines += _columns(rows, "llrrrlrl")
    lines += ["", "Tokens per length bucket (share of the source), what the mixture asks, and the epochs it takes:", ""]
    rows = [("source", "weight", *labels, "target", "epochs", "most in a bucket", "")]
    for st in stats:
        shares = [f"{100 * t / st.tokens:.1f}%" if st.tokens else "-" for t in st.bucket_tokens]
        if st.weight <= 0:
            rows.append((st.name, "0", *shares, "-", "-", "-", "not in the mixture"))
            continue
        epochs = st.bucket_epochs
        worst = max(range(len(epochs)), key=lambda i: epochs[i])
        flag = f"exceeds max_repetition={st.max_repetition:g}" if epochs[worst] > st.max_repetition + 1e-12 else ""
        rows.append((st.name, f"{st.weight:g}", *shares, f"{st.target:,}", f"{st.epochs:.3f}",
                     f"{epochs[worst]:.3f} in {labels[worst]}", flag))
    lines += _columns(rows, "lr" + "r" * len(labels) + "rrll")
    lines += ["", "What `mixprep run` would tokenize:", ""]
    rows = [("source", "tokenizes", "tokens", "")]
    for st in stats:
        if st.weight <= 0 or not st.tokenizes:
            continue
        whole = "tokenize_whole: true" if cfg.tokenize_whole else \
            f"it holds under {MIN_HOLDS:g}x what is taken, or too few documents per length group to sample"
        note = {"cached": "a token cache serves it", "whole": f"every document ({whole})",
                "sample": f"a first sample ({100 * st.tokenizes_tokens / max(st.tokens, 1):.1f}% of the source, "
                          f"~{FIRST_PASS:.0%} of what is taken); top-ups bring it to ~1.1x"}[st.tokenizes]
        rows.append((st.name, st.tokenizes, f"{st.tokenizes_tokens:,}" if st.tokenizes != "cached" else "-", note))
    lines += _columns(rows, "llrl")
    estimated = [st for st in stats if not st.exact]
    if estimated:
        lines += [""] + [f"* {st.name}: no token cache yet; estimated from {st.sampled_files} of {st.files:,} files "
                         f"({st.sampled_documents:,} documents tokenized), scaled by bytes; subsets as seen in those "
                         "files. "
                         "`mixprep tokenize` makes it exact." for st in estimated]
    return "\n".join(lines)


def _columns(rows, align: str) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        out.append("  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                             for c, w, a in zip(r, widths, align)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


# --- against the published sizes ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PublishedFit:
    """One source of a mixture at its full size against its published size (a range: low, high tokens)."""

    name: str
    target: int
    low: int
    high: int
    max_repetition: float

    @property
    def epochs(self) -> tuple[float, float]:
        """Epochs the target takes: if the source is as large as published at the most, and at the least."""
        return self.target / self.high, self.target / self.low

    @property
    def verdict(self) -> str:
        """``fits``, ``fits if it holds >= N`` (between the published low and high), or ``short``.

        >>> PublishedFit("rw", 560, 500, 650, 1.0).verdict
        'fits if it holds >= 560 tokens (published: 500-650); or allow max_repetition >= 1.12'
        >>> PublishedFit("rw", 560, 500, 650, 1.2).verdict
        'fits'
        """
        most, least = self.epochs[1], self.epochs[0]
        if most <= self.max_repetition + 1e-12:
            return "fits"
        need = f"max_repetition >= {most:.3g}"
        if least <= self.max_repetition + 1e-12:
            holds = math.ceil(self.target / self.max_repetition)
            return f"fits if it holds >= {holds:,} tokens (published: {self.low:,}-{self.high:,}); or allow {need}"
        return f"short: allow {need}, or lower its weight"


def load_published_sizes(path: str) -> dict:
    """``mixtures/published-sizes.yaml``: per source, ``tokens: [low, high]`` and ``excluded: {subset: tokens}``."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


def published_fit(cfg: MixtureConfig, sizes: dict) -> list[PublishedFit]:
    """Every mixed source's full-size target against its published size, less the subsets it excludes.

    A source missing from ``sizes`` is left out (its size is not published: `mixprep stats` without
    ``--published`` counts it).
    """
    mixed = [s for s in cfg.sources if s.weight > 0]
    fits = []
    for s, target in zip(mixed, split_exact(cfg.total_tokens, [s.weight for s in mixed])):
        if s.name not in sizes:
            continue
        low, high = sizes[s.name]["tokens"]
        excluded = {normalize_subset(k): v for k, v in (sizes[s.name].get("excluded") or {}).items()}
        off = sum(excluded.get(normalize_subset(x), 0) for x in s.exclude)
        fits.append(PublishedFit(s.name, target, int(low) - off, int(high) - off, s.max_repetition))
    return fits


def published_table(cfg: MixtureConfig, fits: Sequence[PublishedFit]) -> str:
    rows = [("source", "target", "published (less excluded)", "epochs", "max_repetition", "")]
    for f in fits:
        size = f"{f.low:,}" if f.low == f.high else f"{f.low:,}-{f.high:,}"
        epochs = f"{f.epochs[0]:.3f}" if f.low == f.high else f"{f.epochs[0]:.3f}-{f.epochs[1]:.3f}"
        rows.append((f.name, f"{f.target:,}", size, epochs, f"{f.max_repetition:g}", f.verdict))
    head = (f"{cfg.name} at {cfg.total_tokens:,} tokens against the sources' published sizes "
            "(mixtures/published-sizes.yaml; docs/RECIPE.md):")
    return "\n".join([head, "", *_columns(rows, "lrrrrl")])
