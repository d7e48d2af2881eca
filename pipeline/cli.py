"""The ``mixprep`` command.

    mixprep run --mixture mixtures/stage1.yaml [--data-root URI] [--out DIR] [--cache DIR]
                [--tokenizer PATH] [--total-tokens N] [--seed N] [--shards N] [BEAM FLAGS...]
    mixprep tokenize --mixture FILE [--data-root URI] [--cache DIR] [--tokenizer PATH] [BEAM FLAGS...]
    mixprep verify PATH

Flags mixprep does not know go to Beam (``--runner``, ``--direct_num_workers``, Dataflow's flags).
On the local runner mixprep defaults to one worker process per core.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from .errors import MixprepError

__all__ = ["main"]


def _mixture_args(p: argparse.ArgumentParser, out: bool) -> None:
    p.add_argument("--mixture", required=True, help="mixture YAML (mixtures/stage1.yaml, ...)")
    p.add_argument("--data-root", default="samples", help="folder or URI the sources' roots are relative to")
    p.add_argument("--cache", default=None, help="token cache root (default: OUT/../cache, or out/cache)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json path or hub id, instead of the config's")
    p.add_argument("--total-tokens", type=int, default=None, help="override the mixture's total tokens")
    p.add_argument("--seed", type=int, default=None, help="override the mixture's seed")
    p.add_argument("--shards", type=int, default=None, help="override the number of output shards")
    if out:
        p.add_argument("--out", default=None, help="output folder (default: out/NAME)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixprep", description="Token-exact pretraining data mixtures on Apache Beam.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    _mixture_args(sub.add_parser("run", help="tokenize what the cache lacks, then build the mixture"), out=True)
    _mixture_args(sub.add_parser("tokenize", help="build the token caches only"), out=False)
    v = sub.add_parser("verify", help="check a mixture or cache against its manifest")
    v.add_argument("path")
    return p


def beam_defaults(beam_args: list[str]) -> list[str]:
    """Local runs use every core: multi-process workers (never multi_threading, which loses data)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None:
        args.append("--runner=DirectRunner")
        runner = "DirectRunner"
    if runner in ("DirectRunner", "direct") and not any("direct_running_mode" in a for a in args):
        args.append("--direct_running_mode=multi_processing")
        if not any("direct_num_workers" in a for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if not any("sdk_harness_log_level" in a for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # worker processes log INFO by default
    return args


def _load(args):
    from .config import load_mixture

    overrides = {"total_tokens": args.total_tokens, "seed": args.seed, "shards": args.shards}
    cfg = load_mixture(args.mixture, overrides)
    if args.tokenizer:
        import dataclasses

        tok = args.tokenizer if not os.path.exists(args.tokenizer) else os.path.abspath(args.tokenizer)
        cfg = dataclasses.replace(cfg, tokenizer=tok)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args, beam_args = _parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        return _dispatch(args, beam_defaults(beam_args))
    except MixprepError as e:
        if args.debug:
            traceback.print_exc()
        print(f"mixprep: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args, beam_args: list[str]) -> int:
    if args.command == "verify":
        from .verify import verify_path

        for line in verify_path(args.path):
            print(line)
        return 0
    cfg = _load(args)
    if args.command == "tokenize":
        from .mixture import tokenize_sources
        from .tokenizer import load_tokenizer

        cache = args.cache or os.path.join("out", "cache")
        caches = tokenize_sources(cfg, args.data_root, cache, load_tokenizer(cfg.tokenizer_path), beam_args)
        for name, c in caches.items():
            a, st = c.manifest["accounting"], c.stats
            print(f"{name}: {st['documents']:,} documents, {st['tokens']:,} tokens "
                  f"({a['read']:,} read, {a['rejected']:,} rejected, {a['excluded_subset']:,} excluded) -> {c.directory}")
        return 0
    from .mixture import run_mixture

    out = args.out or os.path.join("out", cfg.name)
    cache = args.cache or os.path.join(os.path.dirname(os.path.abspath(out)), "cache")
    run_mixture(cfg, args.data_root, out, cache, beam_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
