"""Tokenize only what a mixture will take, when a source holds far more than it needs.

A source that holds four or more times the tokens a mixture takes from it, and gives it at least
MIN_GROUP_DOCS documents of each group of length buckets planned together, is not tokenized whole.
Every document has a sample unit ``u`` in [0, 1), a stable hash of its id (the same for every seed
and mixture, so one sampled cache serves every mixture that asks the same of the source), and is
tokenized only if ``u`` is below its length bucket's rate ``q_b``. The rates come from an estimate
made before tokenizing (``estimate.estimate_source``: the first documents of a few files): ``q_b`` is
the bucket's share of the mixture's need over what the bucket holds, aimed low (FIRST_PASS) and
raised by a top-up where that falls short (below). A document's
bucket is only known once it is tokenized, so before that its rate is the largest ``q_b`` over the
buckets its character count allows, given the estimate's spread (1st to 99th percentile) of
characters per token among documents of about its length.

After tokenizing, bucket b's candidates are its cached documents with ``u < q_b``: a uniform sample
of the bucket at rate ``q_b`` (but for a document near a bucket bound whose characters per token lie
outside its length's 1st-99th percentile: it may have been given a neighbour's lower rate, and is
then under-represented; the price of deciding before tokenizing, on a few documents at bucket edges).
The plan counts the bucket as holding (candidate tokens) / ``q_b``, and selection picks among the
candidates exactly as it picks among all documents of a source tokenized whole, so every guarantee
of select.py holds.

Two passes. The estimate sees a few files, and files differ (a source's files are often written in
some order: by crawl, by repository), so its error can be tens of percent, and what a first pass
tokenizes too much is lost. So the first pass aims at FIRST_PASS of the estimated need, without
margin. Reading every document of the source, it also keeps a histogram of the sample units and
lengths of the ones it leaves (``topup``); where its candidates fall short of a bucket's target, the
top-up takes the smallest rates whose candidates, predicted from that histogram, meet the plan, and
tokenizes only the documents the first pass left (its rule covers the first one: it copies their
tokens). A source still short is topped up again, up to TOP_UPS times. A top-up that cannot be made
(the source, as predicted, holds less than MIN_HOLDS times the need) or that still falls short after
TOP_UPS: the source is tokenized whole.

Every step is a function of the files, the config and the tokenizer, never of what the cache holds:
a source already tokenized whole (by another mixture) is read through the same rule and yields the
same candidates, so the shards are the same bytes either way.

The package, one job a module, in the order a run uses them: ``estimate`` (a quick look at each
source and the first pass's rules, ``sample_rules``), ``rule`` (``SampleRule``: the rates, the masks,
``choose_rule``), ``topup`` (sizing a top-up from what the first pass left) and ``driver`` (the loop
that tokenizes the samples, checks them against the plan and tops them up). ``estimate`` and
``driver`` sit above the caches (they tokenize); ``rule`` and ``topup``, which the caches use, below
them: only those two are imported here.
"""

from .rule import FIRST_PASS, MIN_GROUP_DOCS, MIN_HOLDS, TOP_UPS, SampleRule, choose_rule, sample_units
from .topup import CHAR_BINS, SLACK, UNIT_BINS, SampleView, Unseen, char_bins, predict_top_up, unit_bins, unit_edge

__all__ = ["CHAR_BINS", "FIRST_PASS", "MIN_GROUP_DOCS", "MIN_HOLDS", "SLACK", "TOP_UPS", "UNIT_BINS", "SampleRule",
           "SampleView", "Unseen", "char_bins", "choose_rule", "predict_top_up", "sample_units", "unit_bins",
           "unit_edge"]
