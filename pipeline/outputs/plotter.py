"""The report's plots drawn by a process started with the run, while the run works.

    with Plotter() as plotter:          # at the start of `mixprep run`: it imports matplotlib now
        ...                             # the run
        pngs = plotter.render(manifest, histograms, ["shares", "epochs", "lengths"])

Importing matplotlib and drawing the three plots took ~1.3 s at the end of every run, after the
workers had gone and with one core idle (docs/PERFORMANCE.md, issue 25). The helper imports
matplotlib at the start, on the core the driver leaves idle while it imports Beam and lists files,
then waits. Asked for the plots, it forks once (it runs no threads, so a fork is safe) and the two
processes draw them side by side: the length distributions (the largest) in one, the others in
the other. The drawing code is ``report.render_plots``, the same as in-process, so the PNG bytes are
the same; the driver writes them (where it writes everything else, remote stores included).

A helper that cannot be started or dies gives None: the caller draws in-process, as before.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Sequence

__all__ = ["Plotter"]


class Plotter:
    """A child process with matplotlib imported that renders the report's plots on request (once)."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError:
            self._proc = None

    def render(self, manifest: dict, histograms: dict, names: Sequence[str]) -> dict | None:
        """{plot: PNG bytes, or the exception drawing it raised}, or None when the helper is not usable.

        Raises ImportError when the helper has no matplotlib (as drawing in-process would)."""
        proc, self._proc = self._proc, None  # one request per helper
        if proc is None:
            return None
        groups = [[n for n in names if n == "lengths"], [n for n in names if n != "lengths"]]
        try:
            pickle.dump((manifest, histograms, [g for g in groups if g]), proc.stdin, pickle.HIGHEST_PROTOCOL)
            proc.stdin.close()
            got = pickle.load(proc.stdout)
        except (OSError, EOFError, pickle.PickleError):
            got = None
        finally:
            _end(proc)
        if isinstance(got, ImportError):
            raise got
        return got if isinstance(got, dict) else None

    def close(self) -> None:
        """End the helper if it was never asked (a run that failed): killed, not waited for, as it may
        still be importing matplotlib."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            _end(proc)

    def __enter__(self) -> "Plotter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _end(proc: subprocess.Popen) -> None:
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _serve() -> None:
    """The helper: import matplotlib, wait for one request on stdin, answer it on stdout."""
    out = os.fdopen(os.dup(1), "wb")  # the answer's channel; whatever else prints goes to stderr
    os.dup2(2, 1)
    from .report import render_plots

    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot  # noqa: F401 - imported now, while the run works: the point of the helper

        missing = None
    except ImportError as e:
        missing = e
    try:
        manifest, histograms, groups = pickle.load(sys.stdin.buffer)
    except (EOFError, OSError, pickle.PickleError):
        return  # the run ended or failed without asking
    if missing is not None:
        pickle.dump(missing, out)
        out.flush()
        return
    r, w = os.pipe()
    child = os.fork() if len(groups) > 1 else -1
    if child == 0:  # draws the second group, hands its PNGs to the parent
        os.close(r)
        with os.fdopen(w, "wb") as f:
            pickle.dump(_rendered(render_plots, manifest, histograms, groups[1]), f, pickle.HIGHEST_PROTOCOL)
        os._exit(0)
    os.close(w)
    got = _rendered(render_plots, manifest, histograms, groups[0])
    if child > 0:
        with os.fdopen(r, "rb") as f:
            try:
                got.update(pickle.load(f))
            except (EOFError, pickle.PickleError):
                got = None  # the child died: the driver draws them itself
        os.waitpid(child, 0)
    else:
        os.close(r)
    pickle.dump(got, out, pickle.HIGHEST_PROTOCOL)
    out.flush()


def _rendered(render_plots, manifest, histograms, names) -> dict:
    got = render_plots(manifest, histograms, names)
    for name, value in got.items():  # an exception that does not pickle goes back as its repr
        if isinstance(value, BaseException):
            try:
                pickle.dumps(value)
            except Exception:  # noqa: BLE001
                got[name] = RuntimeError(repr(value))
    return got


if __name__ == "__main__":
    _serve()
