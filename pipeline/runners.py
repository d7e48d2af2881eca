"""mixprep's local runs: the engine (Beam's FnApiRunner, never a binary fetched at run time), its
worker processes (one per core, their allocator) and Beam's defaults for them.

Beam's ``DirectRunner`` (since 2.6x) first tries Prism, a Go runner whose binary it downloads from
GitHub when the pipeline starts, and falls back to the FnApiRunner when it cannot. So the same
command ran on Prism on a machine with internet and on the FnApiRunner without: two engines, one of
them never tested with mixprep. mixprep's local runs are built and measured on the FnApiRunner
(multi-process workers, input dealt out per worker: ``cache.local_workers``), so ``LocalRunner``
goes there directly. ``--runner=PrismRunner`` still asks for Prism by name.

``--runner=DaskRunner`` (or ``dask``, any case) runs on a ``dask.distributed`` cluster through Beam's
own runner (``apache-beam[dask]``; ``--dask_client_address=HOST:PORT`` names the scheduler, else Beam
starts a local cluster). That runner computes a side input, and any bag two steps read, once per
reader: ``one_job`` says such runners get the two-pipeline run, whose plan is made once, on the driver.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Sequence

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

from .errors import ConfigError

__all__ = ["LOCAL_RUNNER", "DASK_RUNNER", "LocalRunner", "DaskRunner", "beam_defaults", "one_job", "worker_allocator",
           "worker_environment", "JEMALLOC", "WORKER_ALLOCATOR_ENV", "WORKER_MALLOC"]

DaskRunner: type  # declared only: the module's __getattr__ (below) makes it on first use

LOCAL_RUNNER = "pipeline.runners.LocalRunner"  # what `mixprep` passes Beam for DirectRunner (or no runner)
DASK_RUNNER = "pipeline.runners.DaskRunner"  # for DaskRunner / dask
BEAM_DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


class LocalRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without its attempt at Prism; everything else as DirectRunner does it."""

    # DirectRunner.run_pipeline tries Prism unless this is set, as an interactive session sets it;
    # it gates nothing else. tests/test_runners.py checks that a run really takes the FnApiRunner.
    _is_interactive = True


def __getattr__(name: str):
    # DaskRunner is made on first use (Beam resolves --runner=pipeline.runners.DaskRunner by getattr):
    # importing dask.distributed costs ~0.6 s that local runs need not pay.
    if name == "DaskRunner":
        globals()[name] = runner = _dask_runner_class()
        return runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dask_runner_class() -> type:
    """Beam's DaskRunner, whose client is closed when the job ends.

    Beam's opens a ``dask.distributed.Client`` per pipeline and leaves it open: a run of two pipelines
    would hold two scheduler connections (or, without ``--dask_client_address``, two local clusters)
    until the driver exits. ``metrics()`` still raises NotImplementedError, as Beam's does: the runner
    gathers no counters (``progress.Progress.finished`` says so).
    """
    from apache_beam.runners.dask import dask_runner

    class DaskRunnerResult(dask_runner.DaskRunnerResult):  # the name progress.py shows
        def wait_until_finish(self, duration=None):
            try:
                return super().wait_until_finish(duration)
            finally:
                if duration is None or self.state == "DONE":  # not after a mere timeout: the job runs on
                    self.client.close()

    class DaskRunner(dask_runner.DaskRunner):
        __qualname__ = "DaskRunner"  # as Beam's, in logs and reprs

        def run_pipeline(self, pipeline, options):
            result = super().run_pipeline(pipeline, options)
            return DaskRunnerResult(result.client, result.futures)

    return DaskRunner


# Beam's local SDK worker processes start ~28 threads (gRPC channels, state sampler) before the
# tokenizer's native thread, more than glibc's default malloc arena limit (8 per core): that thread then
# shares an arena with Python's allocations, and `tokenizers` encoded the bench corpus ~1.35x slower in
# a worker than in a plain process (docs/PERFORMANCE.md). An arena each, and freed memory kept in it
# (not trimmed back to the kernel after every call), measured 0.72-0.94M tokens/s per worker against
# 0.56-0.63M. glibc reads this when a process starts, so it is set in the driver for the workers.
WORKER_MALLOC = "glibc.malloc.arena_max=64:glibc.malloc.trim_threshold=268435456"

# `tokenizers` spends about a third of its time in malloc/free (a String per token). With jemalloc
# preloaded the workers' whole `tokenizers` run took 13% less time than with glibc (3 alternating
# pairs, docs/PERFORMANCE.md), and the tiktoken run no more. `make` puts the distribution's library in
# the venv; MIXPREP_WORKER_MALLOC=glibc turns it off, a path picks another library.
WORKER_ALLOCATOR_ENV = "MIXPREP_WORKER_MALLOC"
JEMALLOC = "libjemalloc.so.2"


def worker_allocator(env=os.environ) -> str | None:
    """The allocator library local workers preload: the venv's jemalloc, else the system's, else None."""
    choice = env.get(WORKER_ALLOCATOR_ENV, "").strip()
    if choice.lower() == "glibc":
        return None
    if choice:
        if not os.path.isfile(choice):
            raise ConfigError(f"{WORKER_ALLOCATOR_ENV}={choice!r} is not a file: give the path of a malloc "
                              f"library (e.g. {JEMALLOC}) or 'glibc'")
        return choice
    own = os.path.join(sys.prefix, "lib", JEMALLOC)
    if os.path.isfile(own):
        return own
    import ctypes.util

    found = ctypes.util.find_library("jemalloc")  # a name the dynamic loader resolves, or None
    return found if found and found.startswith("libjemalloc.so") else None


def worker_environment(env=os.environ) -> None:
    """Set in ``env`` (the driver's environment, which local worker processes inherit) what they need.

    A GLIBC_TUNABLES the user set is left alone, and so is an LD_PRELOAD that already names an
    allocator (two would fight over every free); otherwise the allocator goes first in it.
    """
    env.setdefault("GLIBC_TUNABLES", WORKER_MALLOC)
    allocator = worker_allocator(env)
    preload = [p for p in re.split(r"[\s:]+", env.get("LD_PRELOAD", "")) if p]
    if allocator and not any("malloc" in os.path.basename(p) for p in preload):
        env["LD_PRELOAD"] = ":".join([allocator, *preload])


def beam_defaults(beam_args: list[str], debug: bool = False) -> list[str]:
    """Local runs use every core: multi-process workers (never multi_threading, which loses data), on
    the FnApiRunner (``runners.LocalRunner``: DirectRunner, or no runner, without Beam's Prism).
    ``DaskRunner`` (or ``dask``) is ``runners.DaskRunner``, with a task per input element.

    Without ``debug`` the workers do not log the tracebacks of errors they raise: the driver reports
    the error itself, as one paragraph.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None or runner.lower() in ("directrunner", "direct"):
        args = _without_flag(args, "--runner") + [f"--runner={LOCAL_RUNNER}"]
        runner = LOCAL_RUNNER
    if runner.lower() in ("daskrunner", "dask"):
        args = _without_flag(args, "--runner") + [f"--runner={DASK_RUNNER}"]
        runner = DASK_RUNNER
    if _is_dask(runner) and not any(a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in args):
        # Beam's Dask Create puts up to 128 elements in one partition, one task: one file (or cache
        # part) a task spreads tokenizing and packing over every worker.
        args.append("--dask_partition_size=1")
    if runner == LOCAL_RUNNER and not any("direct_running_mode" in a for a in args):
        args.append("--direct_running_mode=multi_processing")
        if not any("direct_num_workers" in a for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if not any("sdk_harness_log_level" in a for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # worker processes log INFO by default
        if not debug:
            quiet = {"apache_beam.runners.common": "CRITICAL", "apache_beam.runners.worker.sdk_worker": "CRITICAL"}
            args.append(f"--sdk_harness_log_level_overrides={json.dumps(quiet)}")
    return args


def one_job(beam_args: Sequence[str]) -> bool:
    """Whether a run that samples nothing may be one Beam job (tokenize, plan on a worker, pack).

    Not on Dask: Beam's DaskRunner computes a side input once per task that reads it, and a bag two
    steps read once per reader, so the one job tokenized, finalized and planned several times over
    (18 files: 72 tokenize calls, 4 plan steps). Two pipelines with the plan made on the driver between
    them compute every step once (a retried task aside).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner
    return not _is_dask(runner)


def _is_dask(runner: str | None) -> bool:
    """``runner``: a --runner value (a name, a class path) or None."""
    return (runner or "").lower() in ("daskrunner", "dask", DASK_RUNNER.lower(), BEAM_DASK_RUNNER.lower())


def _without_flag(args: list[str], flag: str) -> list[str]:
    """``args`` less ``flag=VALUE`` and ``flag VALUE``.

    >>> _without_flag(["--runner", "DirectRunner", "--x=1", "--runner=direct"], "--runner")
    ['--x=1']
    """
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out
