"""A finished token cache, opened read-only, and the lookup of the cache that serves a source."""

from __future__ import annotations

import copy
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..dedup.content import DEFAULT_NORMALIZATION
from ..dedup.removed import Removed
from ..errors import FormatError
from ..layout import CACHE_MANIFEST, cache_dir, cache_manifest, caches_in, doc_table, is_finished_cache, source_dir
from ..mmidx import MMIDXReader
from ..sampling import SampleRule
from ..sources import SourceFile, SourceSpec
from ..storage import read_json
from ..tokenizer import LoadedTokenizer
from .fingerprint import cache_fingerprint

log = logging.getLogger("mixprep")

class TokenCache:
    """A finished cache, opened read-only: its manifest, document tables and token parts."""

    def __init__(self, directory: str):
        self.directory = directory
        path = cache_manifest(directory)
        if not storage.exists(path):
            raise FormatError(f"{directory}: no {CACHE_MANIFEST}: not a finished token cache (run `mixprep tokenize`).")
        self.manifest = read_json(path)
        self._readers: dict[int, MMIDXReader] = {}
        self.removed: Removed | None = None  # documents dedup took out: never candidates (``without``)

    def without(self, removed: Removed | None) -> "TokenCache":
        """The same cache seen without ``removed``'s documents (duplicates kept in another place): every
        pass over its document tables (``mix.select.doc_buckets``) leaves them out."""
        view = copy.copy(self)
        view._readers, view.removed = {}, removed
        return view

    @classmethod
    def find(cls, cache_root: str, spec: SourceSpec, files: list[SourceFile], tokenizer: LoadedTokenizer,
             rule: SampleRule | None = None, normalization: str = DEFAULT_NORMALIZATION) -> "TokenCache | None":
        """The finished cache that serves these files (and ``rule``): the whole source's; for a rule,
        else its own, else the smallest sample of the same files whose rule covers it. Each holds every
        document ``rule`` tokenizes, and selection reads it through ``rule``: the same shards."""
        whole = cache_fingerprint(spec, files, tokenizer, None, normalization)
        for fp in [whole] if rule is None else [whole, cache_fingerprint(spec, files, tokenizer, rule, normalization)]:
            directory = cache_dir(cache_root, spec.name, fp)
            if is_finished_cache(directory):
                return cls(directory)
        if rule is None:
            return None
        covering = [c for c in sampled_caches(source_dir(cache_root, spec.name), whole) if c.rule.covers(rule)]
        return min(covering, key=lambda c: (c.stats["tokens"], c.directory), default=None)

    @property
    def parts(self) -> list[dict]:
        return self.manifest["parts"]

    @property
    def stats(self) -> dict:
        return self.manifest["stats"]

    @property
    def rule(self) -> SampleRule | None:
        """The sample rule this cache was built with (None: every document is in it)."""
        d = self.manifest.get("sample_rule")
        return SampleRule.from_dict(d) if d else None

    def prefix(self, part: int) -> str:
        return storage.join(self.directory, self.parts[part]["part"])

    def doc_table(self, part: int, columns: list[str] | None = None) -> pa.Table:
        with storage.open_read(doc_table(self.prefix(part))) as f:
            return pq.read_table(pa.BufferReader(f.read()) if storage.is_remote(self.directory) else f,
                                 columns=columns)

    def tokens(self, part: int) -> MMIDXReader:
        if part not in self._readers:
            self._readers[part] = MMIDXReader(self.prefix(part))
        return self._readers[part]

    def release_pages(self) -> None:
        """``MMIDXReader.release_pages`` for every part opened so far."""
        for r in self._readers.values():
            r.release_pages()

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()


def sampled_caches(folder: str, source_fingerprint: str) -> list["TokenCache"]:
    """The finished sampled caches in a source's cache ``folder`` of the files whose whole cache has
    ``source_fingerprint`` (same files, reader, tokenizer and cache version)."""
    found = []
    for directory in caches_in(folder):
        try:
            cache = TokenCache(directory)
        except Exception as e:  # another run's damaged cache is not this run's input
            log.warning("ignoring token cache %s: %s", cache_manifest(directory), e)
            continue
        # (A sample from before the unseen histogram cannot serve a top-up: not one of them.)
        if cache.rule is not None and cache.manifest.get("source_fingerprint") == source_fingerprint \
                and "unseen" in cache.manifest:
            found.append(cache)
    return found
