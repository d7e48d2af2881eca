"""Sampled caches on disk: the runs reading one (read marks), and their removal once a larger cache holds them."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time

from .. import storage
from ..layout import CACHE_MANIFEST, reader_mark, readers_dir, source_dir_of
from ..storage import make_dirs, read_json, write_json
from .token_cache import TokenCache, sampled_caches

log = logging.getLogger("mixprep")

def remove_covered_samples(cache: "TokenCache") -> list[str]:
    """Delete the sampled caches of ``cache``'s files that hold no document it lacks (a top-up's first
    sample; every sample, when ``cache`` is whole): ``find`` serves their rules from ``cache``.
    One that another run is reading (``Readers``) stays. Returns the folders deleted."""
    folder = source_dir_of(cache.directory)
    source_fingerprint = cache.manifest.get("source_fingerprint") or cache.manifest["fingerprint"]
    removed = []
    for other in sampled_caches(folder, source_fingerprint):
        if other.directory != cache.directory and (cache.rule is None or cache.rule.covers(other.rule)):
            if runs := other_readers(other.directory):
                log.info("keeping token cache %s although %s covers it: runs %s read it", other.directory,
                         cache.directory, ", ".join(runs))
                continue
            storage.delete_tree(other.directory, first=CACHE_MANIFEST)  # first: no half-deleted cache looks finished
            removed.append(other.directory)
    return removed


# Runs sharing a cache root: a run that reads a sampled cache marks it in the cache's readers folder
# until it ends, and another run that builds a cache covering it does not remove it meanwhile. A mark
# older than READ_MARK_SECONDS is a crashed run's. (A run that finds a sample in the instant another
# is removing it can still lose it: it then stops with a missing-file error; rerun it.)
READ_MARK_SECONDS = 3 * 24 * 3600
RUN_ID = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Readers:
    """The sampled caches this run reads, each marked as read until ``close`` (a context manager)."""

    def __init__(self):
        self._marks: list[str] = []

    def add(self, cache: "TokenCache") -> None:
        if cache.rule is not None:  # whole caches are never removed
            self.mark(cache.directory)

    def mark(self, directory: str) -> None:
        path = reader_mark(directory, RUN_ID)
        if path not in self._marks:
            make_dirs(readers_dir(directory))
            write_json(path, {"run": RUN_ID, "since": time.time()})
            self._marks.append(path)

    def close(self) -> None:
        for path in self._marks:
            try:
                storage.delete(path)
            except OSError as e:  # a stale mark only delays a removal by READ_MARK_SECONDS
                log.warning("could not remove read mark %s: %s", path, e)
            if not storage.is_remote(path):  # object stores have no empty folders to leave behind
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(path))
        self._marks.clear()

    def __enter__(self) -> "Readers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def other_readers(directory: str) -> list[str]:
    """The runs other than this one that marked the cache in ``directory`` as read within READ_MARK_SECONDS."""
    now, runs = time.time(), []
    for path in storage.list_files(readers_dir(directory), "*.json"):
        try:
            mark = read_json(path)
        except Exception:  # noqa: BLE001 - a mark being written or removed right now
            continue
        if mark.get("run") != RUN_ID and now - float(mark.get("since", 0)) < READ_MARK_SECONDS:
            runs.append(str(mark.get("run")))
    return runs
