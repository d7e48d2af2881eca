"""Time and peak memory of one dedup resolution over finished token caches (docs/SCALING.md).

    python scripts/resolution_memory.py --mixture M.yaml --cache CACHE [--memory-mb 64]

Opens the cache of each of the mixture's sources under CACHE (one each: `mixprep tokenize` wrote it),
resolves duplicates as a run does before planning (``mix.dedup.resolve_duplicates``, into a temporary
folder), and prints the candidates, the removals, the wall time, and this process's peak RSS before
and after resolving (``ru_maxrss``): the difference is what the resolution held. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def removals_digest(records: list) -> str:
    """sha256 of the (removed, kept) places, as int64 columns in order: comparable across versions."""
    import numpy as np

    cols = ("removed_source", "removed_part", "removed_row", "kept_source", "kept_part", "kept_row")
    r = {c: np.concatenate([x[c] for x in records]) if records else np.empty(0) for c in cols}
    return hashlib.sha256(np.stack([r[c].astype("<i8") for c in cols], axis=1).tobytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixture", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--memory-mb", type=int, default=None, help="MIXPREP_DEDUP_MEMORY_MB for this resolution")
    args = ap.parse_args(argv)
    if args.memory_mb is not None:
        os.environ["MIXPREP_DEDUP_MEMORY_MB"] = str(args.memory_mb)

    from pipeline.cache import TokenCache
    from pipeline.config import load_mixture
    from pipeline.mix.dedup import resolve_duplicates

    cfg = load_mixture(args.mixture)
    caches = {}
    for s in cfg.sources:
        found = sorted(glob.glob(os.path.join(args.cache, s.name, "*", "cache.json")))
        if len(found) != 1:
            raise SystemExit(f"{args.cache}/{s.name}: expected one finished cache, found {len(found)}")
        caches[s.name] = TokenCache(os.path.dirname(found[0]))
    before = peak_mib()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        dedup = resolve_duplicates(cfg, caches, {n: None for n in caches}, out)
        seconds, peak = time.perf_counter() - t, peak_mib()
        digest = removals_digest(list(dedup.records()))
    row = {"candidates": sum(b["documents"] for b in dedup.before.values()),
           "removed": dedup.summary()["documents_removed"], "seconds": round(seconds, 2),
           "peak_rss_mib_before": round(before), "peak_rss_mib": round(peak),
           "key_partitions": dedup.index["key_partitions"], "spilled_mib": round(dedup.index["spilled"] / 2**20),
           "removals_sha256": digest}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
