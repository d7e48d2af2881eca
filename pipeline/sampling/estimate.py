"""A quick look at each source before a run: how much it holds, and whether to tokenize only a sample.

    rules = sample_rules(cfg, files, tokenizer)    # per source: a SampleRule, or None (tokenize whole)

``estimate_source`` counts every document of a few files spread over the source (``pick_files``) and
tokenizes the first ones: documents, tokens, subsets and tokens per length bucket, scaled to the
whole source. ``mixprep stats`` shows these figures; ``sample_rules`` turns them into the first-pass
rule of a source that holds far more than the mixture takes (sampling.py). The rule is a function of
the source's files alone, never of what a cache holds, so the shards never depend on the cache.
"""

from __future__ import annotations

import collections
import logging
from typing import Sequence

import numpy as np

from ..cache import HISTOGRAM_BINS
from ..config import MixtureConfig
from ..document import Reject
from ..mix.plan import bucket_targets, split_exact
from ..sources import SourceFile, read_documents
from ..tokenizer import Encoder, LoadedTokenizer
from .rule import FIRST_PASS, MIN_HOLDS, SampleRule, choose_rule

__all__ = ["estimate_source", "length_groups", "pick_files", "sample_rules"]

log = logging.getLogger("mixprep")

# The estimate behind sampling: every document of a few files counted, the first ones tokenized
# (a glance first, to skip the estimate when the mixture takes too much of a source to sample it).
PROBE_FILES, PROBE_DOCS, PROBE_CHARS, GLANCE_CHARS = 4, 1000, 1 << 20, 1 << 15


def sample_rules(cfg: MixtureConfig, files: dict[str, list[SourceFile]],
                 tokenizer: LoadedTokenizer) -> dict[str, SampleRule | None]:
    """Per source: the rule that tokenizes only a sample of it, or None (tokenize it whole).

    From an estimate of each source (its first documents in a few files: a function of the files,
    whatever the caches hold), so the choice, and with it the shards, never depends on the cache.
    """
    bounds = cfg.bucket_bounds
    mixed = [s for s in cfg.sources if s.weight > 0]
    rules: dict[str, SampleRule | None] = {s.name: None for s in mixed}
    if cfg.tokenize_whole:
        return rules
    groups = length_groups(cfg)
    glance, encoder = Encoder(tokenizer, fast=False), None  # `tokenizers` loads in a tenth of tiktoken's time
    for s, target in zip(mixed, split_exact(cfg.total_tokens, [s.weight for s in mixed])):
        rough = estimate_source(s.spec, files[s.name], tokenizer, bounds, 1, PROBE_DOCS, GLANCE_CHARS, glance)
        if rough["tokens"] < MIN_HOLDS * target / 2:  # far from holding enough: whole, no estimate
            continue
        encoder = encoder or Encoder(tokenizer)
        est = estimate_source(s.spec, files[s.name], tokenizer, bounds, PROBE_FILES, PROBE_DOCS, PROBE_CHARS, encoder)
        targets = bucket_targets(target, est["bucket_tokens"], bounds, cfg.long_policy(s.name))
        rules[s.name] = choose_rule(targets, est["bucket_tokens"], est["bucket_documents"],
                                    tuple(est["chars_per_token"]), bounds, est["chars_per_token_by_length"], groups,
                                    share=FIRST_PASS)
        if rules[s.name] is not None:
            log.info("source %s: holds ~%.1fx what the mixture takes; tokenizing a first sample (rates %s)", s.name,
                     est["tokens"] / max(target, 1), ", ".join(f"{r:.4g}" for r in rules[s.name].rates))
    return rules


def length_groups(cfg: MixtureConfig) -> list[int]:
    """Buckets planned together: short and long under a long-document policy, else all of them."""
    threshold = cfg.long_documents.threshold if cfg.long_documents else None
    return [int(threshold is not None and lo >= threshold) for lo in (1, *cfg.bucket_bounds)]


def pick_files(files: Sequence[SourceFile], count: int) -> list[SourceFile]:
    """Up to ``count`` files spread over the source: round-robin over folders, evenly spaced in each.

    >>> fs = [SourceFile(f"{d}/{i}", f"{d}/{i}", 1, d) for d in "ab" for i in range(4)]
    >>> [f.rel for f in pick_files(fs, 3)]
    ['a/0', 'a/2', 'b/0']
    """
    by_folder: dict[str, list[SourceFile]] = collections.defaultdict(list)
    for f in sorted(files, key=lambda f: f.rel):
        by_folder[f.folder].append(f)
    take = collections.Counter()
    left = min(count, len(files))
    while left:
        for folder in sorted(by_folder):
            if left and take[folder] < len(by_folder[folder]):
                take[folder] += 1
                left -= 1
    picked = [fs[(j * len(fs)) // take[folder]] for folder, fs in by_folder.items() for j in range(take[folder])]
    return sorted(picked, key=lambda f: f.rel)


def estimate_source(spec, files: Sequence[SourceFile], tokenizer: LoadedTokenizer, bounds: Sequence[int],
                    sample_files: int, sample_docs: int, sample_chars: int = 1 << 62,
                    encoder: Encoder | None = None) -> dict:
    """Estimated documents, tokens, subsets and bucket tokens of a source from a sample of its files.

    Every document of ``sample_files`` files is counted; the first ``sample_docs`` of each (at most
    ``sample_chars`` characters of them) are tokenized (with ``encoder``, or one built here).
    """
    encoder = encoder or Encoder(tokenizer)
    picked = pick_files(files, max(1, sample_files))
    docs = collections.Counter()
    chars = collections.Counter()
    tok_tokens = collections.Counter()  # per subset, over the tokenized documents
    tok_chars = collections.Counter()
    tok_docs = collections.Counter()
    hist = np.zeros(HISTOGRAM_BINS, np.int64)
    bucket = np.zeros(len(bounds) + 1, np.int64)
    bucket_docs = np.zeros(len(bounds) + 1, np.int64)
    ratios = []  # characters per token (EOS included) of each tokenized document
    for sf in picked:
        batch, batch_chars = [], 0
        for item in read_documents(spec, sf):
            if isinstance(item, Reject):
                continue
            docs[item.subset] += 1
            chars[item.subset] += len(item.text)
            if len(batch) < sample_docs and batch_chars < sample_chars:
                batch.append(item)
                batch_chars += len(item.text)
        for d, ids in zip(batch, encoder.encode_batch([d.text for d in batch])):
            n = len(ids)
            tok_tokens[d.subset] += n
            tok_chars[d.subset] += len(d.text)
            tok_docs[d.subset] += 1
            hist[n.bit_length() - 1] += 1
            b = int(np.searchsorted(np.asarray(bounds, np.int64), n, side="right"))
            bucket[b] += n
            bucket_docs[b] += 1
            ratios.append((len(d.text), len(d.text) / n))
    all_ratio = (sum(tok_tokens.values()) - sum(tok_docs.values())) / max(sum(tok_chars.values()), 1)
    read_bytes = sum(f.size for f in picked)
    scale = sum(f.size for f in files) / read_bytes if read_bytes else 0.0
    subsets = {}
    for s in sorted(docs):
        ratio = (tok_tokens[s] - tok_docs[s]) / tok_chars[s] if tok_chars[s] else all_ratio
        subsets[s] = (round(docs[s] * scale), round((chars[s] * ratio + docs[s]) * scale))
    tokens = sum(t for _, t in subsets.values())
    shares = bucket / bucket.sum() if bucket.sum() else np.zeros_like(bucket, dtype=float)
    documents = sum(d for d, _ in subsets.values())
    bucket_documents = split_exact(documents, bucket_docs.tolist()) if bucket_docs.sum() else [0] * len(bucket)
    return {"exact": False, "documents": documents, "tokens": tokens, "subsets": subsets,
            "bucket_tokens": split_exact(tokens, shares.tolist()) if bucket.sum() else [0] * len(bucket),
            "bucket_documents": bucket_documents,
            **_chars_per_token(ratios),
            "histogram": hist.tolist(), "sampled_files": len(picked), "sampled_documents": sum(tok_docs.values())}


def _chars_per_token(samples: list[tuple[int, float]], min_docs: int = 50) -> dict:
    """The spread (1st to 99th percentile) of characters per token, over all the tokenized documents
    and per log2 bin of their characters where a bin has ``min_docs`` (for sampling.py)."""
    if not samples:
        return {"chars_per_token": [1.0, 8.0], "chars_per_token_by_length": []}
    chars = np.array([c for c, _ in samples], dtype=np.float64)
    ratio = np.array([r for _, r in samples])
    bins = np.floor(np.log2(np.maximum(chars, 1))).astype(np.int64)
    by_length = [[int(k), float(np.percentile(ratio[bins == k], 1)), float(np.percentile(ratio[bins == k], 99))]
                 for k in np.unique(bins) if np.count_nonzero(bins == k) >= min_docs]
    return {"chars_per_token": [float(np.percentile(ratio, 1)), float(np.percentile(ratio, 99))],
            "chars_per_token_by_length": by_length}
