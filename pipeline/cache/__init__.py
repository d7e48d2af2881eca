"""Tokenize once, mix many: the per-source token cache.

A cache is a folder per source and fingerprint (``pipeline.layout`` names its files and draws the
tree). Each input file makes one part: its tokens (an MMIDIDX pair, one entry per document, EOS
included), its document table (row i describes entry i: doc_id, subset, n_tokens, doc_hash,
n_chars), the records rejected reading it (when there are some) and its summary (file, counts,
stats, sha256s; written last). The cache's manifest, cache.json (fingerprint inputs, tokenizer,
totals), is written last of all; a sampled cache also holds the marks of the runs reading it
(``Readers``).

One input file makes one part, so a cache's bytes do not depend on the runner or the worker count,
and a rerun after a crash keeps every part that was finished. The fingerprint covers the source's
files and sizes, the paths its patterns match that are refused (``sources.files.REFUSALS``), the
reader version, the reading options and the tokenizer's sha256: a cache with the same fingerprint is
reused as it is; any change makes a new one. Each part is a GPT-NeoX / Megatron dataset as it stands.
cache.json's ``accounting`` has every record (read = forwarded + rejected + excluded_subset) and
every file: files_matched = files_read (one part each) + len(files_refused).

A cache may hold a sample of its source (``sampling.SampleRule``, part of the fingerprint): the
documents the rule passes are tokenized, the others are read, counted (``not_tokenized``) and left,
but for a histogram of their sample units and lengths (``unseen`` in the part and cache summaries):
what sizes a top-up (topup.py).
A sampled cache may be built on an earlier sampled cache of the same files whose rule its own rule
covers (a top-up, sampling.py): the documents the earlier rule passed are copied from it, in file
order, not tokenized again. The new cache is the same bytes as one built from scratch. A cache that
holds all of a sample's documents replaces it on disk (``remove_covered_samples``) unless another
run is reading it.

The package, one job a module: ``fingerprint`` (the format's version and document-table schema, and
the fingerprint; the folder and file names, and when a part is done, are ``pipeline.layout``'s),
``build`` (the Beam transform that tokenizes files into parts and writes cache.json),
``token_cache`` (a finished cache, read-only, and the lookup of the cache serving a source) and
``samples`` (which runs read a sampled cache, and its removal once a larger cache covers it).
"""

from .build import BuildCache, BuildCaches, deal_in_turn, local_workers
from .fingerprint import CACHE_VERSION, HISTOGRAM_BINS, cache_fingerprint
from .samples import READ_MARK_SECONDS, RUN_ID, Readers, other_readers, remove_covered_samples
from .token_cache import TokenCache, sampled_caches

__all__ = ["BuildCache", "BuildCaches", "CACHE_VERSION", "HISTOGRAM_BINS", "READ_MARK_SECONDS", "RUN_ID",
           "Readers", "TokenCache", "cache_fingerprint", "deal_in_turn", "local_workers",
           "other_readers", "remove_covered_samples", "sampled_caches"]
