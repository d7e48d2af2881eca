"""The manifest's dedup section on the bundled dry runs (exact dedup on in both stages): every removal is
a true copy (same content key, kept document not removed, recomputed from the caches), the per-source and
per-pair counts are the removals file's, the plan counted what remains, and no removed document is in
the shards."""

import collections
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cache import TokenCache
from pipeline.inspect import Provenance
from pipeline.layout import DEDUP_FILE


def _caches(runs, m):
    return {n: TokenCache(os.path.join(runs["cache"], n, s["cache_fingerprint"][:16])) for n, s in m["sources"].items()}


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_the_dedup_section_is_the_removals_and_each_is_a_true_copy(runs, stage):
    m, folder = runs[stage], runs["root"] / stage
    d = m["dedup"]
    assert d["exact"] and d["normalization"] == "nfc_whitespace" and d["priority"] == m["config"]["dedup"]["priority"]
    removed = pq.read_table(folder / DEDUP_FILE).to_pydict()
    assert len(removed["removed_source"]) == d["documents_removed"] and sum(removed["n_tokens"]) == d["tokens_removed"]
    pairs = collections.Counter()
    for k, r, n in zip(removed["kept_source"], removed["removed_source"], removed["n_tokens"]):
        pairs[(k, r, "documents")] += 1
        pairs[(k, r, "tokens")] += n
    assert {(p["kept"], p["removed"], w): p[w] for p in d["pairs"] for w in ("documents", "tokens")} == dict(pairs)

    caches = _caches(runs, m)
    keys = {}
    for name, c in caches.items():
        for part in range(len(c.parts)):
            t = c.doc_table(part, columns=["content_key_hi", "content_key_lo", "n_tokens"])
            keys[(name, part)] = (t.column(0).to_numpy(), t.column(1).to_numpy(), t.column(2).to_numpy())
    gone = set(zip(removed["removed_source"], removed["removed_part"], removed["removed_row"]))
    priority = d["priority"]
    for i in range(len(removed["removed_source"])):
        r = (removed["removed_source"][i], removed["removed_part"][i], removed["removed_row"][i])
        k = (removed["kept_source"][i], removed["kept_part"][i], removed["kept_row"][i])
        key_r = [keys[r[:2]][c][r[2]] for c in (0, 1)]
        assert key_r == [keys[k[:2]][c][k[2]] for c in (0, 1)] and k not in gone
        assert keys[r[:2]][2][r[2]] == removed["n_tokens"][i]
        rank = [priority.index(s) if s in priority else len(priority) for s in (k[0], r[0])]
        assert rank[0] <= rank[1]  # the kept copy's source comes first (or shares its rank)

    for name, s in d["sources"].items():
        assert s["documents_after"] == s["documents_before"] - s["exact"]["documents"]
        assert s["tokens_after"] == s["tokens_before"] - s["exact"]["tokens"]
        assert s["exact"]["documents"] == sum(1 for x in removed["removed_source"] if x == name)
        if not m["sources"][name].get("tokenized", {}).get("sampled"):  # whole sources: the plan counted this
            assert m["sources"][name]["available_tokens"] == s["tokens_after"]
            assert s["tokens_before"] == caches[name].stats["tokens"]
    before = sum(s["tokens_before"] for s in d["sources"].values())
    assert sum(s["share_before"] for s in d["sources"].values()) == pytest.approx(1, abs=1e-8)
    assert all(s["share_before"] == round(s["tokens_before"] / before, 9) for s in d["sources"].values())

    prov = Provenance(str(folder))
    for k in range(len(prov.shards)):
        refs, _, names = prov.refs(k)
        places = set(zip(np.asarray(names)[refs["source"]].tolist(), refs["part"].tolist(), refs["row"].tolist()))
        assert not places & gone
