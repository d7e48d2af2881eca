"""The ``mixprep`` command.

    mixprep run --mixture mixtures/stage1.yaml [--data-root URI] [--out DIR] [--cache DIR]
                [--tokenizer PATH] [--total-tokens N] [--seed N] [--shards N] [--no-progress] [BEAM FLAGS...]
    mixprep tokenize --mixture FILE [--data-root URI] [--cache DIR] [--tokenizer PATH] [BEAM FLAGS...]
    mixprep stats --mixture FILE [--data-root URI] [--cache DIR] [--total-tokens N] [--published]  # before mixing
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
import logging
import os
import re
import sys
import traceback

from .console import LogFilter, StderrLines, WorkerStderr
from .errors import MixprepError
from .layout import REPORT_FILE
from .lifetime import freeze_long_lived

__all__ = ["main", "user_error"]

_PIPELINE_COMMANDS = ("run", "tokenize")


def _mixture_args(p: argparse.ArgumentParser, out: bool) -> None:
    p.add_argument("--mixture", required=True,
                   help="mixture YAML, or the name of a bundled one (stage1, stage2: mixtures/*.yaml)")
    p.add_argument("--data-root", default=None,
                   help="folder or URI the sources' roots are relative to (default: the bundled samples)")
    p.add_argument("--cache", default=None, help="token cache root (default: OUT/../cache, or out/cache)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json path or hub id instead of the mixture's; `small`: the bundled test tokenizer")
    p.add_argument("--total-tokens", type=int, default=None, help="override the mixture's total tokens")
    p.add_argument("--seed", type=int, default=None, help="override the mixture's seed")
    p.add_argument("--shards", type=int, default=None, help="override the number of output shards")
    p.add_argument("--validation-tokens", type=int, default=None, help="override the held-out validation tokens")
    p.add_argument("--test-tokens", type=int, default=None, help="override the held-out test tokens")
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
    s.add_argument("--published", nargs="?", const="", default=None, metavar="SIZES",
                   help="plan the full-size mixture against the sources' published sizes instead (default: the "
                        "bundled mixtures/published-sizes.yaml); reads no data")
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


def _load(args):
    from .bundled import bundled, mixture_path, tokenizer_argument
    from .config import load_mixture

    if args.data_root is None:
        args.data_root = bundled("samples") or "samples"
        logging.getLogger("mixprep").info("data root: the bundled samples (%s); --data-root names your corpora",
                                          args.data_root)
    overrides = {"total_tokens": args.total_tokens, "seed": args.seed, "shards": args.shards,
                 "validation_tokens": args.validation_tokens, "test_tokens": args.test_tokens,
                 "tokenizer": tokenizer_argument(args.tokenizer) if args.tokenizer else None}
    return load_mixture(mixture_path(args.mixture), overrides)


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
    plotter = None
    if args.command == "run":  # matplotlib imported in a helper now, on a core the driver leaves idle
        from .outputs.plotter import Plotter

        plotter = Plotter()
    try:
        workers = None
        if args.command in _PIPELINE_COMMANDS:
            from .runners import beam_defaults, worker_environment

            beam_args = beam_defaults(beam_args, args.debug)
            if "--direct_running_mode=multi_processing" in beam_args:
                worker_environment()
                if not args.debug:
                    workers = WorkerStderr(StderrLines(noise, tracebacks))
        try:
            return _dispatch(args, beam_args, tty, plotter)
        finally:
            if plotter is not None:
                plotter.close()
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


def _dispatch(args, beam_args: list[str], tty: bool = False, plotter=None) -> int:
    if args.command == "verify":
        from .outputs.verify import verify_path

        for line in verify_path(args.path):
            print(line)
        return 0
    if args.command == "report":
        from .outputs.report import write_report

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
    if args.command == "stats" and args.published is not None:
        from .bundled import PUBLISHED_SIZES, bundled
        from .stats import load_published_sizes, published_fit, published_table

        sizes = args.published or os.path.join(bundled("mixtures") or "mixtures", PUBLISHED_SIZES)
        print(published_table(cfg, published_fit(cfg, load_published_sizes(sizes))))
        return 0
    if args.command == "stats":
        from .stats import source_stats, stats_table

        cache = args.cache or os.path.join("out", "cache")
        print(stats_table(cfg, source_stats(cfg, args.data_root, cache, args.sample_files, args.sample_docs)))
        return 0
    if args.command == "tokenize":
        from .cache.tokenizing import tokenize_mixture

        cache = args.cache or os.path.join("out", "cache")
        with _progress(args, tty) as progress:
            caches = tokenize_mixture(cfg, args.data_root, cache, beam_args, progress)
        for name, c in caches.items():
            a, st = c.manifest["accounting"], c.stats
            refused = len(a.get("files_refused", ()))
            print(f"{name}: {a.get('files_read', len(c.parts)):,} files ({refused:,} refused), "
                  f"{st['documents']:,} documents, {st['tokens']:,} tokens "
                  f"({a['read']:,} read, {a['rejected']:,} rejected, {a['excluded_subset']:,} excluded) "
                  f"-> {c.directory}")
        return 0
    from .mixture import run_mixture

    out = args.out or os.path.join("out", cfg.name)
    cache = args.cache or _default_cache(out)
    with _progress(args, tty) as progress:
        run_mixture(cfg, args.data_root, out, cache, beam_args, progress, plotter)
    print(f"report: {os.path.join(out, REPORT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
