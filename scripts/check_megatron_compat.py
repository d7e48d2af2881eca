"""Manual check: Megatron-core's IndexedDataset reads our shards exactly as pipeline.mmidx does.

Not part of ``make test``: megatron-core needs torch, which mixprep does not depend on. Run it in a
throwaway environment::

    python3 -m venv /tmp/megatron-venv
    /tmp/megatron-venv/bin/pip install torch==2.13.0 megatron-core
    /tmp/megatron-venv/bin/python scripts/check_megatron_compat.py out/stage1-00000-of-00004
    /tmp/megatron-venv/bin/python scripts/check_megatron_compat.py --demo /tmp/mmidx-demo

``--demo DIR`` first writes small uint16 and int32 shards (multi-sequence documents, an empty
sequence) with MMIDXWriter into DIR and checks those. Exits 1 on any mismatch.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pipeline.errors import FormatError  # noqa: E402
from pipeline.mmidx import MMIDXReader, MMIDXWriter  # noqa: E402


def write_demo(folder: str) -> list:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    prefixes = []
    for name, dtype, vocab in (("demo-u16", np.uint16, 50257), ("demo-i32", np.int32, 200_000)):
        prefix = os.path.join(folder, name)
        with MMIDXWriter(prefix, dtype, one_document_per_sequence=False) as w:
            for doc in range(200):
                for _ in range(1 + doc % 3):
                    w.add(rng.integers(0, vocab, int(rng.integers(0, 50)) if doc != 7 else 0))
                w.end_document()
        prefixes.append(prefix)
    return prefixes


def compare(prefix: str) -> list:
    """Differences between Megatron-core's and our reading of ``prefix`` (empty when they agree)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    theirs, problems = IndexedDataset(prefix), []
    try:
        ours = MMIDXReader(prefix)
    except FormatError as e:
        print(f"{prefix}: megatron-core opens it ({len(theirs)} sequences), ours refuses: {e}")
        return [str(e)]
    with ours:
        if len(theirs) != len(ours):
            return [f"sequence count: megatron {len(theirs)}, ours {len(ours)}"]
        if np.dtype(theirs.index.dtype) != ours.dtype:
            problems.append(f"dtype: megatron {np.dtype(theirs.index.dtype)}, ours {ours.dtype}")
        for name in ("sequence_lengths", "document_indices"):
            if not np.array_equal(getattr(theirs, name), getattr(ours, name)):
                problems.append(f"{name} differ")
        bad = [i for i in range(len(ours)) if not np.array_equal(theirs[i], ours[i])]
        if bad:
            problems.append(f"{len(bad)} sequences differ, first {bad[0]}")
        print(f"{prefix}: {len(ours)} sequences, {ours.num_documents} documents, "
              f"{ours.num_tokens} tokens of {ours.dtype}: " + ("; ".join(problems) or "identical"))
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="shard prefixes (without .bin/.idx)")
    parser.add_argument("--demo", metavar="DIR", help="write demo shards into DIR and check them too")
    args = parser.parse_args(argv)
    prefixes = args.prefixes + (write_demo(args.demo) if args.demo else [])
    if not prefixes:
        parser.error("give at least one prefix or --demo DIR")
    failed = [p for p in prefixes if compare(p)]
    print(f"{len(prefixes) - len(failed)} of {len(prefixes)} shards read identically by megatron-core")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
