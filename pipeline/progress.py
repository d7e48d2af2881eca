"""Live progress of a local run, read from the files the pipeline leaves as it goes.

Beam's local runner gives its counters only at the end of a pipeline, but mixprep's writers leave
traces as they work (their names: layout.py): a cache part's summary when an input file is tokenized
(its documents and tokens), a shard's record when a shard is written, and the temporary ``.bin`` a
writer is filling (its size is the tokens so far). A thread in
the driver polls them and prints documents, tokens, throughput and the time left per source: redrawn
in place on a terminal, one plain line every ``log_every`` seconds otherwise (a log file). At the end
it prints Beam's counters as a table::

    with Progress(sys.stderr) as progress:
        run_mixture(cfg, data_root, out, cache_root, beam_args, progress=progress)

``run_mixture`` tells it what is being built (:meth:`Progress.tokenizing`, :meth:`Progress.packing`;
:meth:`Progress.packing_when_planned` when one pipeline tokenizes, plans and packs) and hands it
each pipeline's result (:meth:`Progress.finished`). Time is read from ``clock``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shutil
import threading
import time
from typing import Callable, Sequence, TextIO

from . import storage
from .layout import finished_shard, in_progress, part_summaries, parts_in_progress, shard_files

__all__ = ["Progress", "counters_table", "format_duration", "format_count"]


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (or ``M:SS``); ``?`` when unknown.

    >>> [format_duration(s) for s in (None, 5, 75, 3725)]
    ['?', '0:05', '1:15', '1:02:05']
    """
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_count(n: float) -> str:
    """Short counts for rates: ``950``, ``41.2k``, ``3.10M``.

    >>> [format_count(n) for n in (950, 41234, 3.1e6, 2.5e9)]
    ['950', '41.2k', '3.10M', '2.50G']
    """
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"
    return f"{n:.0f}"


@dataclasses.dataclass
class _Source:
    name: str
    directory: str
    sizes: list[int]  # input bytes per part (file) index
    done_at_start: set[int]
    parts: dict[int, dict] = dataclasses.field(default_factory=dict)  # finished parts' summaries


@dataclasses.dataclass
class _Pack:
    out: str
    shards: list[str]
    plan_hash: str
    tokens: int  # selected tokens: what the shards will hold, tails included
    done_at_start: set[str]


class Progress:
    """Polls a run's output folders and reports its progress on ``stream``.

    Args:
      stream: where to write (stderr).
      tty: redraw in place; default ``stream.isatty()``.
      interval: seconds between polls (the redraw rate on a terminal).
      log_every: seconds between plain lines when not on a terminal.
      clock: monotonic seconds (injected by tests).
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None, interval: float = 0.5, log_every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval, self.log_every, self.clock = interval, log_every, clock
        self.counters: dict[tuple[str, str], int] = collections.Counter()
        self.no_counters = ""  # the runner of a pipeline whose result had no counters to give
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()  # the thread and the caller both draw
        self._sources: list[_Source] = []
        self._pack: _Pack | None = None
        self._planned: tuple | None = None  # packing_when_planned: (out, shards, plan file, records before)
        self._start = clock()
        self._drawn = 0  # lines of the block last drawn on the terminal
        self._last_log = self._start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what run_mixture tells it ---

    def tokenizing(self, sources: Sequence[tuple[str, str, Sequence]]) -> None:
        """Caches about to be built: ``(source, cache directory, input files)``."""
        with self._lock:
            self._sources = [_Source(name, d, [f.size for f in files], set(self._finished_parts(d)))
                             for name, d, files in sources]
            self._phase_start = self.clock()

    def packing(self, out: str, shards: Sequence[str], plan_hash: str, tokens: int) -> None:
        """Shards about to be written into ``out`` (``tokens``: the selected tokens they will hold)."""
        with self._draw_lock:
            self._start_pack(out, shards, plan_hash, tokens)

    def packing_when_planned(self, out: str, shards: Sequence[str], plan_file: str) -> None:
        """Shards that the same pipeline writes once its plan step has run: the pack phase starts when
        ``plan_file`` (``{"plan_hash", "tokens"}``, written by that step) appears."""
        # The shard records there now, before the pipeline runs: the pack phase may start and end
        # between two polls, and then only these tell a shard reused from one this run wrote.
        earlier = self._shard_records(_Pack(out, list(shards), "", 0, set()), any_plan=True)
        with self._lock:
            self._planned = (out, list(shards), plan_file, earlier)

    def _check_planned(self) -> None:
        if self._planned is not None and storage.exists(self._planned[2]):
            out, shards, plan_file, earlier = self._planned
            plan = storage.read_json(plan_file)
            self._start_pack(out, shards, plan["plan_hash"], plan["tokens"],
                             {n for n, r in earlier.items() if r.get("plan_hash") == plan["plan_hash"]})

    def _start_pack(self, out: str, shards: Sequence[str], plan_hash: str, tokens: int,
                    done_before: set[str] | None = None) -> None:
        self._planned = None
        if self._sources:  # the tokenize block's last state stays on screen; a new block starts
            self._draw(final=True)
            self._drawn = 0
        with self._lock:
            self._sources = []
            self._pack = _Pack(out, list(shards), plan_hash, tokens, set())
            done = set(self._shard_records(self._pack))
            self._pack.done_at_start = done if done_before is None else done & done_before
            self._phase_start = self.clock()

    def finished(self, result) -> None:
        """A pipeline ended: keep its counters (committed values; attempted when a runner has none).

        A runner that gathers none (Beam's DaskRunner raises NotImplementedError) is noted, and said
        once at the end: the run goes on, since the manifest's accounting comes from the caches' files.
        """
        with self._draw_lock, contextlib.suppress(Exception):  # a pack phase too quick for the thread to see
            self._check_planned()
        try:
            counters = result.metrics().query()["counters"]
        except NotImplementedError:
            self.no_counters = _runner_name(result)
            return
        for r in counters:
            value = r.committed if r.committed is not None else r.attempted
            self.counters[(r.key.metric.namespace, r.key.metric.name)] += int(value or 0)

    # --- polling ---

    @staticmethod
    def _finished_parts(directory: str) -> dict[int, dict]:
        out = {}
        try:
            paths = part_summaries(directory)
        except Exception:  # a store that cannot be listed right now: next poll
            return out
        for index, path in paths.items():
            try:
                out[index] = storage.read_json(path)
            except Exception:
                pass  # replaced while we read it: next poll
        return out

    @staticmethod
    def _shard_records(pack: _Pack, any_plan: bool = False) -> dict[str, dict]:
        """Shard records of ``pack``'s plan (``any_plan``: of any plan) whose shard is done, as pack.py decides."""
        out = {}
        for name in pack.shards:
            try:
                record = finished_shard(pack.out, name, None if any_plan else pack.plan_hash)
            except Exception:  # being written or replaced: next poll
                continue
            if record is not None:
                out[name] = record
        return out

    def poll(self) -> list[dict]:
        """One row per source being tokenized, or one for the shards being written."""
        with self._lock:
            now = self.clock()
            elapsed = max(now - getattr(self, "_phase_start", self._start), 1e-9)
            if self._pack is not None:
                return [self._poll_pack(self._pack, elapsed)]
            return [self._poll_source(s, elapsed) for s in self._sources]

    def _poll_source(self, s: _Source, elapsed: float) -> dict:
        parts = self._finished_parts(s.directory)
        itemsize = 2
        ratio = None  # .bin bytes per input byte, from finished parts
        if parts:
            itemsize = 4 if any(p["shard"].get("dtype") == "int32" for p in parts.values()) else 2
            in_b = sum(p["file_size"] for p in parts.values())
            ratio = sum(p["shard"]["bin_bytes"] for p in parts.values()) / in_b if in_b else None
        partial_tokens, partial_bytes = 0, 0.0
        for index, path in parts_in_progress(s.directory):
            if index in parts:
                continue
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            partial_tokens += size // itemsize
            if ratio:
                partial_bytes += min(size / ratio, s.sizes[index])
        total = sum(s.sizes)
        done = sum(s.sizes[i] for i in parts) + partial_bytes
        new = done - sum(s.sizes[i] for i in s.done_at_start if i < len(s.sizes))
        tokens = sum(p["stats"]["tokens"] for p in parts.values()) + partial_tokens
        new_tokens = tokens - sum(parts[i]["stats"]["tokens"] for i in s.done_at_start if i in parts)
        rate = new / elapsed
        return {
            "label": s.name, "unit": "files", "done": len(parts), "of": len(s.sizes),
            "documents": sum(p["stats"]["documents"] for p in parts.values()), "tokens": tokens,
            "fraction": done / total if total else 1.0, "tokens_per_s": new_tokens / elapsed,
            "eta": (total - done) / rate if rate > 0 else (0.0 if done >= total else None),
        }

    def _poll_pack(self, p: _Pack, elapsed: float) -> dict:
        shards = self._shard_records(p)
        tokens = sum(r["tokens"] + r["tail_tokens"] for r in shards.values())
        itemsize = 2
        for r in shards.values():
            if r["tokens"]:
                itemsize = max(1, r["bin_bytes"] // r["tokens"])
                break
        for name in p.shards:
            if name not in shards:
                for path in in_progress(shard_files(p.out, name)[0]):
                    try:
                        tokens += os.path.getsize(path) // itemsize
                    except OSError:
                        pass
        before = sum(shards[n]["tokens"] + shards[n]["tail_tokens"] for n in p.done_at_start if n in shards)
        rate = (tokens - before) / elapsed
        return {
            "label": os.path.basename(os.path.normpath(p.out)), "unit": "shards", "done": len(shards),
            "of": len(p.shards), "documents": None,
            "tokens": tokens, "fraction": min(tokens / p.tokens, 1.0) if p.tokens else 1.0, "tokens_per_s": rate,
            "eta": (p.tokens - tokens) / rate if rate > 0 else (0.0 if tokens >= p.tokens else None),
        }

    # --- drawing ---

    @staticmethod
    def render(rows: Sequence[dict], phase: str) -> list[str]:
        """The terminal block: one line per row and a total when there are several."""
        lines = []
        for r in rows:
            docs = f"{r['documents']:>10,} docs  " if r["documents"] is not None else ""
            rate = f"{format_count(r['tokens_per_s']):>7} tok/s" if r["tokens_per_s"] or r["fraction"] < 1 else \
                "reused (done before this run)"
            lines.append(f"{phase:<8} {r['label']:<12} {r['done']:>4}/{r['of']:<4} {r['unit']:<6} "
                         f"{100 * r['fraction']:5.1f}%  {docs}{r['tokens']:>13,} tokens  {rate}  "
                         f"ETA {format_duration(r['eta'])}")
        if len(rows) > 1:
            lines.append(Progress._total_line(rows, phase))
        return lines

    @staticmethod
    def _total_line(rows: Sequence[dict], phase: str) -> str:
        rate = sum(r["tokens_per_s"] for r in rows)
        etas = [r["eta"] for r in rows]
        eta = None if any(e is None for e in etas) else max(etas, default=0.0)
        done, of = sum(r["done"] for r in rows), sum(r["of"] for r in rows)
        return (f"{phase}: {done}/{of} {rows[0]['unit']}, {sum(r['tokens'] for r in rows):,} tokens, "
                f"{format_count(rate)} tok/s, ETA {format_duration(eta)}")

    def _phase(self) -> str:
        return "pack" if self._pack is not None else "tokenize"

    def draw(self, final: bool = False) -> None:
        """Redraw the block (terminal) or write a plain line when one is due (log)."""
        with self._draw_lock:
            self._draw(final)

    def _draw(self, final: bool) -> None:
        self._check_planned()
        rows = self.poll()
        if not rows:
            return
        phase = self._phase()
        if self.tty:
            width = max(40, shutil.get_terminal_size((120, 24)).columns - 1)
            lines = [line[:width] for line in self.render(rows, phase)]  # a wrapped line breaks the redraw
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
            self.stream.flush()
            self._drawn = len(lines)
            return
        now = self.clock()
        if final or now - self._last_log >= self.log_every:
            self._last_log = now
            line = self._total_line(rows, phase) if len(rows) > 1 else self.render(rows, phase)[0]
            detail = "; ".join(f"{r['label']} {r['done']}/{r['of']}" for r in rows) if len(rows) > 1 else ""
            self.stream.write(f"progress: {line}" + (f" ({detail})" if detail else "") + "\n")
            self.stream.flush()

    # --- the thread ---

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.draw()
            except Exception:  # progress must never break a run
                pass

    def __enter__(self) -> "Progress":
        self._thread = threading.Thread(target=self._run, name="mixprep-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            try:
                self.draw(final=True)
            except Exception:
                pass
            if self.counters:
                self.stream.write(counters_table(self.counters) + "\n")
            if self.no_counters:
                self.stream.write(f"{self.no_counters} reports no counters: the manifest's accounting comes from the "
                                  "caches\n")
            self.stream.flush()
        return False


def _runner_name(result) -> str:
    """``DaskRunner`` for a ``DaskRunnerResult``; "the runner" when the result's type does not say."""
    name = type(result).__name__
    return name.removesuffix("Result") if name.endswith("RunnerResult") else "the runner"


def counters_table(counters: dict[tuple[str, str], int]) -> str:
    """Beam's counters, one row per (namespace, name), sorted.

    >>> print(counters_table({("cache:pile", "tokens"): 81190, ("mix", "samples"): 194}))
    namespace   counter   value
    ----------  -------  ------
    cache:pile  tokens   81,190
    mix         samples     194
    """
    rows = [("namespace", "counter", "value")]
    rows += [(ns, name, f"{v:,}") for (ns, name), v in sorted(counters.items())]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}" for r in rows]
    lines.insert(1, f"{'-' * w[0]}  {'-' * w[1]}  {'-' * w[2]}")
    return "\n".join(line.rstrip() for line in lines)
