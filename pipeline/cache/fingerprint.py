"""What decides a token cache's bytes: its format's version and document-table schema, and the
fingerprint over its inputs (its folder and file names: ``pipeline.layout``)."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from ..dedup.content import DEFAULT_NORMALIZATION
from ..sampling import SampleRule
from ..sources import READER_VERSION, SourceFile, SourceSpec, refused_files
from ..tokenizer import ENCODER_VERSION, LoadedTokenizer

# 2: n_chars in the document table; sampled caches. 3: file accounting (refused paths).
# 4: each document's content key (dedup/content.py) in the document table. 5: that key is XXH3-128
# (was blake2b-128): keys of two versions never match, so no run mixes them.
CACHE_VERSION = 5
HISTOGRAM_BINS = 40  # bin k holds documents of [2**k, 2**(k+1)) tokens
DOC_TABLE_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("subset", pa.string()), ("n_tokens", pa.int32()), ("doc_hash", pa.uint64()),
     ("n_chars", pa.int64()), ("content_key_hi", pa.uint64()), ("content_key_lo", pa.uint64())]
)


def cache_fingerprint(spec: SourceSpec, files: list[SourceFile], tokenizer: LoadedTokenizer,
                      rule: SampleRule | None = None, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """sha256 over everything that decides the cache's content; ``normalization``: the content keys'
    (the document table holds them under one normalization, so another one is another cache)."""
    key = {
        "cache_version": CACHE_VERSION,
        "reader_version": READER_VERSION,
        "encoder_version": ENCODER_VERSION,
        "kind": spec.kind,
        "text_field": spec.text_key,
        "include": sorted(spec.include),
        "exclude": sorted(spec.exclude),
        "skip_corrupt_files": spec.skip_corrupt_files,
        "files": [[f.rel, f.size] for f in files],
        "refused": [[r.rel, r.reason] for r in refused_files(files)],  # their accounting is in the cache
        "tokenizer_sha256": tokenizer.sha256,
        "content_normalization": normalization,
    }
    if rule is not None:
        key["sample_rule"] = rule.to_dict()
        key["unseen"] = 1  # a sampled cache keeps the histogram of the documents it did not tokenize (topup.py)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

