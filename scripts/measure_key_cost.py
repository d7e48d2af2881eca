"""What the content key costs the tokenize stage: stage 1's bundled samples tokenized into a fresh cache
(one in-memory worker, the run's encoder backend), with the key and with it replaced by zeros; best of 6.

    .venv/bin/python scripts/measure_key_cost.py
"""

import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pipeline.cache.build as build  # noqa: E402
from pipeline.cache.tokenizing import find_caches, tokenize_missing  # noqa: E402
from pipeline.config import load_mixture  # noqa: E402
from pipeline.run import Run  # noqa: E402
from pipeline.tokenizer import Encoder  # noqa: E402


def tokenize_seconds(cfg, keys) -> float:
    build.content_keys = keys  # what _TokenizeFileFn calls per batch
    with tempfile.TemporaryDirectory() as cache:
        run = Run.start(cfg, os.path.join(ROOT, "samples"), cache, "",
                        ["--runner=DirectRunner", "--direct_running_mode=in_memory"])
        _, missing = find_caches(run, {n: None for n in run.files})
        start = time.perf_counter()
        tokenize_missing(run, missing)
        return time.perf_counter() - start


def main() -> None:
    cfg = load_mixture(os.path.join(ROOT, "mixtures", "stage1.yaml"), {"tokenizer": "small"})
    real = build.content_keys

    def zeros(texts, normalization):
        return np.zeros((len(list(texts)), 2), np.uint64)

    without = min(tokenize_seconds(cfg, zeros) for _ in range(6))
    with_keys = min(tokenize_seconds(cfg, real) for _ in range(6))
    backend = Encoder(Run.start(cfg, os.path.join(ROOT, "samples"), "", "").tokenizer).backend
    print(f"tokenize stage 1's samples ({backend}): without keys {without:.2f} s, with keys {with_keys:.2f} s "
          f"(+{(with_keys - without) / without:.0%})")


if __name__ == "__main__":
    main()
