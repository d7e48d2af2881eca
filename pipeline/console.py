"""What a `mixprep` command shows on stderr: mixprep's progress and warnings, not Beam's start-up noise.

A local run starts Beam worker processes that inherit stderr. Each imports Beam (which warns that
BigQuery's client libraries are missing), logs its start-up at INFO and WARNING ("No
semi_persistent_directory found", "Discarding unparseable args") and prints the traceback of every
failed bundle; the driver then echoes the workers' log records again ("Worker: severity: WARN ...")
and raises the same error, which mixprep reports once, as a paragraph. None of that helps a user.

By default (``quiet``) the driver's log handlers and the workers' stderr drop: log records of Beam's
known start-up noise (``BEAM_NOISE``), the workers' INFO records and their echoes, and traceback
blocks. Real warnings and errors from Beam pass. ``--verbose`` shows everything but tracebacks,
``--debug`` shows everything.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

__all__ = ["BEAM_NOISE", "LogFilter", "StderrLines", "WorkerStderr", "is_noise"]

# Messages Beam logs on every start, whatever the job: none is about the user's run.
BEAM_NOISE = re.compile("|".join(map(re.escape, (
    "apitools not found, and bigquery client libraries are not available",  # any import of Beam without [gcp]
    "No semi_persistent_directory found",  # each local worker's start
    "Discarding unparseable args",  # each local worker: the runner's own flags, passed on to it
    "Logging handler created",  # each local worker, at INFO
    "Unable to check soft delete policy because GCP dependencies are not installed",  # temp_location checks
))))

# A worker process's own log line (Python's default format, LEVEL:logger:message) and the driver's
# echo of a worker's record ("Worker: severity: INFO timestamp {...} message: ...").
_WORKER_LINE = re.compile(rb"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.]*:")
_WORKER_ECHO = re.compile(r"^Worker: severity: (\w+)")


def is_noise(message: str) -> bool:
    """Whether a log message is Beam's start-up noise.

    >>> is_noise("Discarding unparseable args: ['--direct_runner_use_stacked_bundle']")
    True
    >>> is_noise("source pile: reusing token cache out/cache/pile/0123")
    False
    """
    return BEAM_NOISE.search(message) is not None


class LogFilter(logging.Filter):
    """For the driver's log handlers: drops Beam's noise and its echoes of workers' INFO records, and
    (``tracebacks=False``) Beam's records that carry a traceback (the error is reported once)."""

    def __init__(self, noise: bool = False, tracebacks: bool = False):
        super().__init__()
        self._noise, self._tracebacks = noise, tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam") and record.name != "root":
            return True
        message = record.getMessage()
        if not self._tracebacks and (record.exc_info or "Traceback (most recent call last)" in message):
            return False
        if self._noise:
            return True
        echo = _WORKER_ECHO.match(message)
        if echo and echo.group(1) in ("DEBUG", "INFO"):
            return False
        return not is_noise(message)


class StderrLines:
    """Line by line, what of a worker's stderr is shown: not traceback blocks (``tracebacks=False``),
    not Beam's noise or the workers' INFO records (``noise=False``)."""

    def __init__(self, noise: bool = False, tracebacks: bool = False):
        self._noise, self._tracebacks = noise, tracebacks
        self._skipping = self._after = False

    def keep(self, line: bytes) -> bool:
        return self._keep_traceback(line) and (self._noise or self._keep_log(line))

    def _keep_log(self, line: bytes) -> bool:
        level = _WORKER_LINE.match(line)
        if level and level.group(1) in (b"DEBUG", b"INFO"):
            return False
        return not is_noise(line.decode("utf-8", "replace"))

    def _keep_traceback(self, line: bytes) -> bool:
        """A block from ``Traceback (most recent...`` to its exception line is not shown.

        Chained tracebacks (``During handling of the above exception...``) are one block; so is one
        blank line after it.
        """
        if self._tracebacks:
            return True
        if line.startswith((b"Traceback (most recent call last):", b"During handling of the above exception",
                            b"The above exception was the direct cause")):
            self._skipping = True
            return False
        if self._skipping:
            if line.startswith((b" ", b"\t")) or not line.strip():
                return False
            self._skipping, self._after = False, True  # the exception line ends the block
            return False
        if self._after:
            self._after = False
            if not line.strip():
                return False
        return True


class WorkerStderr:
    """Filters what local worker processes print straight to the stderr they inherit.

    While installed, file descriptor 2 is a pipe that a thread copies to the real stderr, line by
    line, through ``StderrLines`` (Beam's worker prints every failed bundle's traceback there,
    ``sdk_worker.py``: ``print(traceback_string, file=sys.stderr)``, besides returning it).
    """

    def __init__(self, lines: StderrLines):
        sys.stderr.flush()
        self._real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.keep = lines.keep
        self._thread = threading.Thread(target=self._pump, args=(r,), name="mixprep-stderr", daemon=True)
        self._thread.start()

    def _pump(self, r: int) -> None:
        pending = b""
        while chunk := os.read(r, 1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(line + b"\n" for line in lines if self.keep(line))
            if out:
                self._write(out)
        if pending and self.keep(pending):
            self._write(pending)
        os.close(r)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._real, data)
        except OSError:
            pass  # stderr is gone: nothing to show it on

    def close(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._real, 2)  # our end of the pipe closes; the workers' closes when they exit
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # else a worker still holds the pipe: leave the thread its stderr
            os.close(self._real)
