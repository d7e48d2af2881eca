"""Check real output with megatron-core: its IndexedDataset reads our shards as pipeline.mmidx does,
and (``--epoch``) its GPTDataset blend over a whole run gives whole documents at the manifest's shares.

``make test`` runs the same checks on a small mixture (tests/outputs/test_megatron.py, with the ``trainers``
extra installed); this script runs them on a real one, in any environment with torch and
megatron-core (no Beam needed)::

    pip install -e '.[trainers]'      # or: pip install torch==2.13.0 megatron-core==0.16.1
    python scripts/check_megatron_compat.py out/stage1/stage1-00000-of-00004
    python scripts/check_megatron_compat.py --demo /tmp/mmidx-demo
    python scripts/check_megatron_compat.py --epoch out/stage1 --cache-root out/cache

``--demo DIR`` first writes small uint16 and int32 shards (multi-sequence documents, an empty
sequence) with MMIDXWriter into DIR and checks those. ``--epoch OUT`` builds one Megatron epoch from
``OUT/megatron-args.json`` (pipeline/megatron_check.py) and counts the samples that join documents
without EOS (any, for ``layout: samples``); ``--cache-root`` also compares every copy with its cached
document. Exits 1 on any mismatch.
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
    parser.add_argument("--epoch", metavar="OUT", help="a mixture folder: check one Megatron epoch of it")
    parser.add_argument("--cache-root", help="with --epoch: the token caches, to compare every copy with")
    args = parser.parse_args(argv)
    prefixes = args.prefixes + (write_demo(args.demo) if args.demo else [])
    if not prefixes and not args.epoch:
        parser.error("give at least one prefix, --demo DIR or --epoch OUT")
    failed = [p for p in prefixes if compare(p)]
    if prefixes:
        print(f"{len(prefixes) - len(failed)} of {len(prefixes)} shards read identically by megatron-core")
    return 1 if failed or (args.epoch and not check_epoch_shares(args.epoch, args.cache_root)) else 0


def check_epoch_shares(out: str, cache_root) -> bool:
    """One Megatron epoch of ``out``: no sample joins documents, each source within 0.1 point."""
    import json

    from pipeline.outputs.megatron_check import check_epoch

    report = check_epoch(out, cache_root=cache_root)
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    shares = report.shares()
    off = {n: (shares.get(n, 0.0), s["written_share"]) for n, s in manifest["sources"].items()
           if abs(shares.get(n, 0.0) - s["written_share"]) >= 0.001}
    print(f"{out}: {report.samples:,} Megatron samples, {report.joined:,} join documents without EOS"
          f"{' (first: ' + report.example + ')' if report.joined else ''}; {report.boundaries:,} document ends, "
          f"{report.whole_documents:,} whole documents inside samples")
    for n, s in manifest["sources"].items():
        print(f"  {n}: {100 * shares.get(n, 0.0):.3f}% of Megatron's tokens, manifest {100 * s['written_share']:.3f}%")
    return report.joined == 0 and not off


if __name__ == "__main__":
    sys.exit(main())
