"""A run's token caches: the ones on disk that serve its sources, and one pipeline building the rest.

    found, missing = find_caches(run, rules)
    caches = {**found, **tokenize_missing(run, missing)}

``rules`` (``sampling.estimate.sample_rules``) tokenize only a sample of some sources; a cache of the
whole source, or of a sample whose rule covers theirs, serves them too (it holds every document the
rule would tokenize). A cache built here removes the samples of the same files it covers, but not
those another run reads (the run's ``readers`` mark the sampled caches it reads, until it closes).
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

from ..config import MixtureConfig, SourceConfig
from ..run import Run
from ..sampling import SampleRule
from ..sources import SourceFile
from ..storage import remove_temporaries
from . import BuildCaches, Readers, TokenCache, remove_covered_samples

__all__ = ["Missing", "build_caches", "built_caches", "find_caches", "tokenize_label", "tokenize_missing",
           "tokenize_mixture"]

log = logging.getLogger("mixprep")


class Missing(NamedTuple):
    """A source no cache serves yet: its files and its sample rule (None: tokenize it whole)."""

    source: SourceConfig
    files: list[SourceFile]
    rule: SampleRule | None


def find_caches(run: Run, rules: dict[str, SampleRule | None],
                only: Sequence[str] | None = None) -> tuple[dict[str, TokenCache], list[Missing]]:
    """The caches found for the mixed sources (or ``only`` these), and the sources still to tokenize."""
    caches, missing = {}, []
    for s in run.cfg.sources:
        if s.name not in run.files or (only is not None and s.name not in only):
            continue
        rule = rules.get(s.name)
        cache = TokenCache.find(run.cache_root, s.spec, run.files[s.name], run.tokenizer, rule, run.cfg.normalization)
        if cache is None:
            missing.append(Missing(s, run.files[s.name], rule))
            continue
        log.info("source %s: reusing token cache %s", s.name, cache.directory)
        if run.readers is not None:
            run.readers.add(cache)
        caches[s.name] = cache
    return caches, missing


def build_caches(run: Run, missing: Sequence[Missing], earlier: dict[str, str] | None = None) -> BuildCaches:
    """The transform building ``missing``'s caches; ``earlier``: per source, a sampled cache that its
    new rule covers (a top-up copies its documents)."""
    log.info("tokenizing %s", ", ".join(f"{m.source.name} ({len(m.files)} files{', a sample' if m.rule else ''})"
                                        for m in missing))
    # One stage for every source: workers take files from all of them, so none idles on a tail.
    return BuildCaches([(m.source.spec, m.files, m.rule) for m in missing], run.tokenizer, run.cache_root, earlier,
                       run.cfg.normalization)


def tokenize_label(build: BuildCaches) -> str:
    return f"TokenizeSources[{','.join(build.directories)}]"


def tell_tokenizing(run: Run, build: BuildCaches, missing: Sequence[Missing]) -> None:
    if run.progress:
        run.progress.tokenizing([(m.source.name, build.directories[m.source.name], m.files) for m in missing])


def tokenize_missing(run: Run, missing: Sequence[Missing],
                     earlier: dict[str, str] | None = None) -> dict[str, TokenCache]:
    """Build ``missing``'s caches in one pipeline; returns them."""
    if not missing:
        return {}
    build = build_caches(run, missing, earlier)
    with run.pipeline() as p:
        _ = p | tokenize_label(build) >> build
        tell_tokenizing(run, build, missing)
    return built_caches(build, run.readers)


def built_caches(build: BuildCaches, readers: Readers | None) -> dict[str, TokenCache]:
    """The caches a finished pipeline built; each removes the samples it covers.

    And the temporary files left in them by attempts that died (a killed worker's, a crashed run's):
    here, on the driver once the job has ended, since no attempt of a step can still be writing.
    """
    caches = {}
    for name, directory in build.directories.items():
        remove_temporaries(directory)
        caches[name] = TokenCache(directory)
        if readers is not None:
            readers.add(caches[name])
        for gone in remove_covered_samples(caches[name]):  # a top-up's first sample, say
            log.info("source %s: removed token cache %s: %s holds all of it", name, gone, directory)
    return caches


def tokenize_mixture(cfg: MixtureConfig, data_root: str, cache_root: str, beam_args: Sequence[str] = (),
                     progress=None) -> dict[str, TokenCache]:
    """``mixprep tokenize``: every mixed source's whole cache, found or built."""
    run = Run.start(cfg, data_root, cache_root, "", beam_args, progress)
    found, missing = find_caches(run, {})
    return {**found, **tokenize_missing(run, missing)}
