"""mix/dedup.py's resolution over arrays, against a brute force of the keep rule (clusters.keep_key);
dedup/removed.py's per-part lookup in a resolution's folder."""

import pickle

import numpy as np

from pipeline.dedup.clusters import DocRef, keep_key
from pipeline.dedup.removed import REMOVAL, Removed, index_path, records_path
from pipeline.mix.dedup import _resolve
from pipeline.storage import write_json

NAMES = ("web", "books", "code")


def _docs(seed, n=400, keys=60):
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n)  # a small pool of texts: many groups, some within one source
    return {"src": rng.integers(0, 3, n).astype(np.uint16), "part": rng.integers(0, 4, n).astype(np.uint32),
            "row": np.arange(n, dtype=np.uint32), "hash": rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2),
            "hi": (k * 7919).astype(np.uint64), "lo": (k * 104729).astype(np.uint64),
            "n": rng.integers(1, 500, n).astype(np.int64)}


def test_one_copy_per_key_kept_by_priority_then_doc_hash():
    for seed in range(5):
        a, priority = _docs(seed), ("code", "web")
        got = _resolve(a, NAMES, priority)
        places = zip(a["src"], a["part"], a["row"], a["hash"])
        refs = [DocRef(NAMES[s], int(p), int(r), int(h)) for s, p, r, h in places]
        best = {}
        for i, ref in enumerate(refs):
            key = (int(a["hi"][i]), int(a["lo"][i]))
            if key not in best or keep_key(ref, priority) < keep_key(refs[best[key]], priority):
                best[key] = i
        kept = {(int(a["hi"][i]), int(a["lo"][i])): i for i in best.values()}
        want = sorted((int(a["src"][i]), int(a["part"][i]), int(a["row"][i]), int(a["n"][i]),
                       *(int(a[c][kept[(int(a["hi"][i]), int(a["lo"][i]))]]) for c in ("src", "part", "row")))
                      for i in range(len(refs)) if i not in set(best.values()))
        rows = list(zip(*(got[c].tolist() for c in ("removed_source", "removed_part", "removed_row", "n_tokens",
                                                     "kept_source", "kept_part", "kept_row"))))
        assert rows == want and len(rows) == len(refs) - len(best)
        # The input's order does not matter.
        perm = np.random.default_rng(seed).permutation(len(refs))
        again = _resolve({c: v[perm] for c, v in a.items()}, NAMES, priority)
        assert all(np.array_equal(got[c], again[c]) for c in got)


def test_no_duplicates_no_removals():
    a = _docs(0, n=50, keys=10**6)
    a["hi"] = np.arange(50, dtype=np.uint64)
    assert all(len(v) == 0 for v in _resolve(a, NAMES, ()).values())


def test_removed_rows_per_part_are_read_from_the_resolutions_folder(tmp_path):
    """Removed reads one part's rows from the records files the index points to, and pickles as a few
    values (a pack step carries no removal list)."""
    r = np.zeros(4, REMOVAL)
    r["removed_source"], r["removed_part"], r["removed_row"] = [1, 1, 1, 1], [0, 2, 2, 5], [4, 1, 9, 0]
    folder = str(tmp_path)
    for file, chunk in enumerate((r[:3], r[3:])):
        with open(records_path(folder, file), "wb") as f:
            f.write(chunk.tobytes())
    parts = {"books": {"0": [0, 0, 1], "2": [0, 1, 2], "5": [1, 0, 1]}}
    write_json(index_path(folder), {"parts": parts})
    removed = Removed(folder, "books", 4, "d1")
    assert removed.rows_of(2).tolist() == [1, 9] and removed.rows_of(1).tolist() == [] and len(removed) == 4
    assert removed.rows_of(5).tolist() == [0] and removed.mask(0, 6).tolist() == [False] * 4 + [True, False]
    again = pickle.loads(pickle.dumps(removed))
    assert len(pickle.dumps(removed)) < 300 and again == removed and hash(again) == hash(removed)
    assert again.rows_of(2).tolist() == [1, 9] and again != Removed(folder, "books", 4, "d2")
    assert Removed(folder, "web", 0, "d1").rows_of(0).tolist() == []  # a source without removals


def test_near_pairs_join_clusters_with_exact_ones():
    """A~B near, B==C exact, D==E exact: one cluster {A, B, C}, A kept (its source is the priority), and
    one {D, E}; a removal is "exact" only when its content key is the kept document's (B and C: near of A)."""
    a = {"src": np.array([1, 0, 0, 2, 2], np.uint16), "part": np.zeros(5, np.uint32),
         "row": np.arange(5, dtype=np.uint32), "hash": np.array([5, 4, 3, 2, 1], np.uint64),
         "hi": np.array([1, 2, 2, 9, 9], np.uint64), "lo": np.zeros(5, np.uint64), "n": np.full(5, 10, np.int64)}
    got = _resolve(a, NAMES, ("books",), exact=True, near=np.array([[0, 1]]))
    rows = list(zip(got["removed_row"].tolist(), got["kept_row"].tolist(), got["kind"].tolist()))
    assert rows == [(1, 0, 2), (2, 0, 2), (3, 4, 1)]  # books' A kept, B and C near of it; D exact of E (smaller hash)
    only_near = _resolve(a, NAMES, ("books",), exact=False, near=np.array([[0, 1]]))
    assert list(zip(only_near["removed_row"].tolist(), only_near["kind"].tolist())) == [(1, 2)]
