"""One run of a mixture: what every step of it reads, made once at the start.

    run = Run.start(cfg, data_root, cache_root, out, beam_args, progress, readers)

Each step of ``mixture.run_mixture`` (sample rules, caches, plan, pack, finish) takes the run, not
a list of loose arguments. The run is frozen: a step's result (caches, plan) is passed on by return
value, never written into the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from .bundled import tokenizer_warnings
from .cache import Readers
from .config import MixtureConfig
from .errors import SourceError
from .progress import Progress
from .runners import one_job
from .sources import SourceFile, list_source_files
from .tokenizer import LoadedTokenizer, load_tokenizer

__all__ = ["Run", "mixed_source_files"]

log = logging.getLogger("mixprep")


@dataclasses.dataclass(frozen=True)
class Run:
    """The config, tokenizer, paths, Beam arguments and input files of one run, and who watches it."""

    cfg: MixtureConfig
    tokenizer: LoadedTokenizer
    data_root: str
    cache_root: str
    out: str  # the mixture's folder ("" for a run that only tokenizes)
    beam_args: tuple[str, ...]
    files: Mapping[str, list[SourceFile]]  # the input files of every source with weight > 0
    progress: Progress | None = None  # told what is built; shown each pipeline's result
    readers: Readers | None = None  # marks the sampled caches this run reads (until it closes)

    @classmethod
    def start(cls, cfg: MixtureConfig, data_root: str, cache_root: str, out: str = "", beam_args: Sequence[str] = (),
              progress: Progress | None = None, readers: Readers | None = None) -> "Run":
        """Load the tokenizer (saying where it is not the mixture's) and list every source's files."""
        tokenizer = load_tokenizer(cfg.tokenizer_path)
        for warning in tokenizer_warnings(cfg.named_tokenizer, cfg.tokenizer, tokenizer.sha256, cfg.total_tokens):
            log.warning("%s", warning)  # and in the manifest's tokenizer section
        files = mixed_source_files(cfg, data_root, beam_args)
        return cls(cfg, tokenizer, data_root, cache_root, out, tuple(beam_args), files, progress, readers)

    @property
    def one_job(self) -> bool:
        """Whether one pipeline may tokenize, plan and pack (not on a runner that recomputes side inputs)."""
        return one_job(self.beam_args)

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[beam.Pipeline]:
        """A pipeline on the run's runner: it runs when the block ends, and its result goes to the progress."""
        with beam.Pipeline(options=PipelineOptions(list(self.beam_args))) as p:
            yield p
        if self.progress:
            self.progress.finished(p.result)


def mixed_source_files(cfg: MixtureConfig, data_root: str,
                       beam_args: Sequence[str] = ()) -> dict[str, list[SourceFile]]:
    """The input files of every source with weight > 0; a glob that matches nothing names the source."""
    FileSystems.set_options(PipelineOptions(list(beam_args)))  # listing may need e.g. S3 options
    out = {}
    for i, s in enumerate(cfg.sources):
        if s.weight <= 0:
            continue
        try:
            out[s.name] = list_source_files(s.spec, data_root)
        except SourceError as e:
            raise SourceError(f"{cfg.origin or 'mixture'}: sources[{i}] ({s.name}): {e}") from None
    return out
