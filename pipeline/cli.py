"""The ``mixprep`` command.

    mixprep run --mixture mixtures/stage1.yaml [--data-root URI] [--out DIR] [--cache DIR]
                [--tokenizer PATH] [--total-tokens N] [--seed N] [--shards N] [--no-progress] [BEAM FLAGS...]
    mixprep tokenize --mixture FILE [--data-root URI] [--cache DIR] [--tokenizer PATH] [BEAM FLAGS...]
    mixprep stats --mixture FILE [--data-root URI] [--cache DIR] [--total-tokens N]   # before mixing
    mixprep report OUT [--cache DIR]                    # rewrite OUT/report.md and its plots
    mixprep inspect OUT --sample N | --doc SOURCE:DOC_ID [--cache DIR] [--tokenizer PATH]
    mixprep verify PATH

Flags mixprep does not know go to Beam (``--runner``, ``--direct_num_workers``, Dataflow's flags);
commands that run no pipeline refuse them. On the local runner mixprep defaults to one worker
process per core, and shows progress on stderr (redrawn on a terminal, plain lines in a log).

An error a user can fix is printed as one paragraph (exit status 2), also when a Beam worker raised
it; any other error as one line (exit status 1). Beam's start-up noise is not shown (console.py):
``--verbose`` shows it, ``--debug`` shows everything, tracebacks included.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import traceback

from .console import LogFilter, StderrLines, WorkerStderr
from .errors import ConfigError, MixprepError
from .lifetime import freeze_long_lived

__all__ = ["main", "user_error", "beam_defaults"]

_PIPELINE_COMMANDS = ("run", "tokenize")


def _mixture_args(p: argparse.ArgumentParser, out: bool) -> None:
    p.add_argument("--mixture", required=True,
                   help="mixture YAML, or the name of a bundled one (stage1, stage2: mixtures/*.yaml)")
    p.add_argument("--data-root", default=None,
                   help="folder or URI the sources' roots are relative to (default: the bundled samples)")
    p.add_argument("--cache", default=None, help="token cache root (default: OUT/../cache, or out/cache)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json path or hub id, instead of the config's")
    p.add_argument("--total-tokens", type=int, default=None, help="override the mixture's total tokens")
    p.add_argument("--seed", type=int, default=None, help="override the mixture's seed")
    p.add_argument("--shards", type=int, default=None, help="override the number of output shards")
    if out:
        p.add_argument("--out", default=None, help="output folder (default: out/NAME)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixprep", description="Token-exact pretraining data mixtures on Apache Beam.")
    p.add_argument("--verbose", action="store_true", help="show Beam's own log lines too (start-up, workers)")
    p.add_argument("--debug", action="store_true", help="show everything, tracebacks included")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_, out in (("run", "tokenize what the cache lacks, then build the mixture", True),
                             ("tokenize", "build the token caches only", False)):
        c = sub.add_parser(name, help=help_)
        _mixture_args(c, out=out)
        c.add_argument("--no-progress", action="store_true", help="no live progress on stderr")
    s = sub.add_parser("stats", help="documents, tokens, lengths and epochs per source, before mixing")
    _mixture_args(s, out=False)
    s.add_argument("--sample-files", type=int, default=4,
                   help="without a cache: files read per source to estimate from (default 4)")
    s.add_argument("--sample-docs", type=int, default=2000,
                   help="without a cache: documents tokenized per sampled file (default 2000)")
    r = sub.add_parser("report", help="write OUT/report.md and its plots from OUT/manifest.json")
    r.add_argument("out", help="a mixture folder (holds manifest.json)")
    r.add_argument("--cache", default=None, help="token cache root, for length histograms (default: OUT/../cache)")
    i = sub.add_parser("inspect", help="what a sample holds, or where a document landed")
    i.add_argument("out", help="a mixture folder (holds manifest.json)")
    what = i.add_mutually_exclusive_group(required=True)
    what.add_argument("--sample", type=int, help="global sample index, in the manifest's shard order")
    what.add_argument("--doc", help="SOURCE:DOC_ID, e.g. pile:train/00.jsonl.zst:17")
    i.add_argument("--cache", default=None, help="token cache root (default: OUT/../cache)")
    i.add_argument("--tokenizer", default=None, help="tokenizer.json to decode with (checked against the manifest)")
    i.add_argument("--no-text", action="store_true", help="list the document pieces only")
    v = sub.add_parser("verify", help="check a mixture or cache against its manifest")
    v.add_argument("path")
    return p


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

    Without ``debug`` the workers do not log the tracebacks of errors they raise: the driver reports
    the error itself, as one paragraph.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from .runners import LOCAL_RUNNER

    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None or runner.lower() in ("directrunner", "direct"):
        args = _without_flag(args, "--runner") + [f"--runner={LOCAL_RUNNER}"]
        runner = LOCAL_RUNNER
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


def _load(args):
    from .bundled import bundled, mixture_path
    from .config import load_mixture

    if args.data_root is None:
        args.data_root = bundled("samples") or "samples"
        logging.getLogger("mixprep").info("data root: the bundled samples (%s); --data-root names your corpora",
                                          args.data_root)
    overrides = {"total_tokens": args.total_tokens, "seed": args.seed, "shards": args.shards}
    cfg = load_mixture(mixture_path(args.mixture), overrides)
    if args.tokenizer:
        import dataclasses

        tok = args.tokenizer if not os.path.exists(args.tokenizer) else os.path.abspath(args.tokenizer)
        cfg = dataclasses.replace(cfg, tokenizer=tok)
    return cfg


# --- errors ----------------------------------------------------------------------------------

# "pipeline.errors.CorruptFileError: <message> [while running 'Step']" inside a Beam error's text.
_RAISED = re.compile(r"(?:^|\s)(pipeline(?:\.\w+)*)\.(\w+): (.+?)(?: \[while running '[^']*'\])?\s*$", re.MULTILINE)


def user_error(exc: BaseException) -> str | None:
    """The paragraph of the MixprepError behind ``exc``, or None when there is none.

    Beam re-raises a worker's exception wrapped (``RuntimeError`` whose text holds the traceback):
    the chain is searched first, then the text, for a ``pipeline.<module>.<Error>: message`` line whose
    class is a MixprepError.

    >>> user_error(RuntimeError("Traceback ...\\npipeline.errors.SourceError: no file matches. [while running 'X']"))
    'no file matches.'
    >>> user_error(ValueError("boom")) is None
    True
    """
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MixprepError):
            return str(e)
        e = e.__cause__ or e.__context__
    e = exc
    seen.clear()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for m in _RAISED.finditer(str(e)):
            if _is_mixprep_error(m.group(1), m.group(2)):
                return m.group(3).strip()
        e = e.__cause__ or e.__context__
    return None


def _is_mixprep_error(module: str, name: str) -> bool:
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, MixprepError)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in _PIPELINE_COMMANDS:
        parser.error(f"unrecognized arguments for `mixprep {args.command}`: {' '.join(beam_args)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    noise, tracebacks = args.verbose or args.debug, args.debug
    logging.getLogger("apache_beam").setLevel(logging.INFO if noise else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(LogFilter(noise, tracebacks))
    tty = sys.stderr.isatty()  # before the worker filter makes stderr a pipe
    try:
        workers = None
        if args.command in _PIPELINE_COMMANDS:
            beam_args = beam_defaults(beam_args, args.debug)
            if "--direct_running_mode=multi_processing" in beam_args:
                worker_environment()
                if not args.debug:
                    workers = WorkerStderr(StderrLines(noise, tracebacks))
        try:
            return _dispatch(args, beam_args, tty)
        finally:
            if workers is not None:
                workers.close()
            if argv is None:  # the command line's own process, about to exit (tests pass argv)
                freeze_long_lived()
    except KeyboardInterrupt:
        print("mixprep: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line's last word on every error
        if args.debug:
            traceback.print_exc()
        message = user_error(e)
        if message is not None:
            print(f"mixprep: error: {message}", file=sys.stderr)
            return 2
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        print(f"mixprep: unexpected error: {type(e).__name__}: {first[:300]}"
              + ("" if args.debug else " (run again with --debug for the traceback)"), file=sys.stderr)
        return 1


def _default_cache(out: str) -> str:
    """The cache root `mixprep run --out OUT` uses by default: OUT's sibling ``cache``."""
    from . import storage

    if storage.is_remote(out):
        return out.rstrip("/").rsplit("/", 1)[0] + "/cache"
    return os.path.join(os.path.dirname(os.path.abspath(out)), "cache")


def _progress(args, tty: bool):
    import contextlib

    from .progress import Progress

    return contextlib.nullcontext() if args.no_progress else Progress(sys.stderr, tty=tty)


def _dispatch(args, beam_args: list[str], tty: bool = False) -> int:
    if args.command == "verify":
        from .verify import verify_path

        for line in verify_path(args.path):
            print(line)
        return 0
    if args.command == "report":
        from .report import write_report

        print(write_report(args.out, cache_root=args.cache or _default_cache(args.out)))
        return 0
    if args.command == "inspect":
        from .inspect import inspect_doc, inspect_sample

        cache = args.cache or _default_cache(args.out)
        if args.sample is not None:
            print(inspect_sample(args.out, args.sample, cache, args.tokenizer, text=not args.no_text))
        else:
            print(inspect_doc(args.out, args.doc, cache))
        return 0
    cfg = _load(args)
    if args.command == "stats":
        from .stats import source_stats, stats_table

        cache = args.cache or os.path.join("out", "cache")
        print(stats_table(cfg, source_stats(cfg, args.data_root, cache, args.sample_files, args.sample_docs)))
        return 0
    if args.command == "tokenize":
        from .mixture import tokenize_sources
        from .tokenizer import load_tokenizer

        cache = args.cache or os.path.join("out", "cache")
        with _progress(args, tty) as progress:
            caches = tokenize_sources(cfg, args.data_root, cache, load_tokenizer(cfg.tokenizer_path), beam_args,
                                      progress)
        for name, c in caches.items():
            a, st = c.manifest["accounting"], c.stats
            print(f"{name}: {st['documents']:,} documents, {st['tokens']:,} tokens "
                  f"({a['read']:,} read, {a['rejected']:,} rejected, {a['excluded_subset']:,} excluded) -> {c.directory}")
        return 0
    from .mixture import run_mixture

    out = args.out or os.path.join("out", cfg.name)
    cache = args.cache or _default_cache(out)
    with _progress(args, tty) as progress:
        run_mixture(cfg, args.data_root, out, cache, beam_args, progress)
    print(f"report: {os.path.join(out, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
