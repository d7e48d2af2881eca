"""Near dedup in real runs (`mixprep run` on small real files, the Beam job of mix/near.py): documents copied
from one source into another with one word in a hundred changed are removed as "near" duplicates of the
priority source's copy, exact copies as "exact"; distinct documents are left alone; shares stay exact
over what remains; 1 and 2 workers write the same bytes; `inspect --doc` says "near duplicate of"."""

import json
import os
import random

import pytest
from conftest import TOKENIZER, WORDS, mixprep

from pipeline.cache import TokenCache
from pipeline.layout import DEDUP_FILE, cache_dir
from pipeline.sources import SourceSpec, list_source_files, read_documents

EDITED, EXACT = range(6), range(6, 9)  # curated documents copied into web: one word changed / byte for byte
MIXTURE = """
name: near
total_tokens: 40000
seq_len: 63
tokenizer: {tokenizer}
shards: 2
tokenize_whole: true
dedup: {{exact: true, priority: [curated], near: {{threshold: 0.8}}}}
sources:
  - {{name: web, kind: files, root: web, paths: ["*.jsonl"], weight: 0.5, max_repetition: 8}}
  - {{name: curated, kind: files, root: curated, paths: ["*.jsonl"], weight: 0.5, max_repetition: 8}}
"""


def _corpus(root):
    rng = random.Random(7)
    vocab = WORDS + [f"{w}{k}" for w in WORDS for k in range(10)]  # 220 words: distinct texts share few 5-grams

    def text(tag):
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(150, 250))) + f" {tag}."

    curated = [text(f"c{i}") for i in range(16)]
    web = [text(f"w{i}") for i in range(16)]
    for i in EDITED:
        words = curated[i].split(" ")
        k = rng.randrange(1, len(words) - 1)
        words[k] = "changed"  # one word in ~200: Jaccard of 5-grams ~0.95
        web.append(" ".join(words))
    web += [curated[i] for i in EXACT]
    for name, texts in (("curated", curated), ("web", web)):
        os.makedirs(root / name, exist_ok=True)
        with open(root / name / "part-0.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return curated, web


def _ids(root, name):
    spec = SourceSpec(name, "files", root=name, paths=("*.jsonl",))
    return [d.doc_id for sf in list_source_files(spec, str(root)) for d in read_documents(spec, sf)]


def _kept_ids(root, m, removals) -> list[str]:
    """The kept documents' ids (the removals name them by cache part and row)."""
    ids = {}
    for name, s in m["sources"].items():
        c = TokenCache(cache_dir(str(root / "cache-one"), name, s["cache_fingerprint"]))
        ids[name] = [c.doc_table(p, columns=["doc_id"]).column("doc_id").to_pylist() for p in range(len(c.parts))]
    return [ids[s][p][r] for s, p, r in zip(removals["kept_source"], removals["kept_part"], removals["kept_row"])]


def _run(root, out, *beam):
    (root / "near.yaml").write_text(MIXTURE.format(tokenizer=TOKENIZER))
    rc, _, err = mixprep("run", "--mixture", root / "near.yaml", "--data-root", root, "--out", root / out, "--cache",
                         root / f"cache-{out}", *(beam or ["--direct_running_mode=in_memory"]))
    assert rc == 0, err[-3000:]
    return json.loads((root / out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def near_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("near")
    _corpus(root)
    return root, _run(root, "one")


def test_edited_copies_are_removed_as_near_duplicates_of_the_priority_source(near_run):
    root, m = near_run
    import pyarrow.parquet as pq

    t = pq.read_table(root / "one" / DEDUP_FILE).to_pydict()
    curated, web = _ids(root, "curated"), _ids(root, "web")
    got = {(r, k, kind) for r, k, kind in zip(t["removed_doc_id"], _kept_ids(root, m, t), t["kind"])}
    want = {(web[16 + j], curated[i], "near") for j, i in enumerate(EDITED)}
    want |= {(web[16 + len(EDITED) + j], curated[i], "exact") for j, i in enumerate(EXACT)}
    assert got == want  # every planted copy, and nothing else: distinct documents are not joined
    assert set(t["removed_source"]) == {"web"} and set(t["kept_source"]) == {"curated"}
    d = m["dedup"]
    assert d["near"]["threshold"] == 0.8 and (d["near"]["bands"], d["near"]["rows"]) == (16, 8)
    assert d["sources"]["web"]["near"]["documents"] == len(EDITED)
    assert d["sources"]["web"]["exact"]["documents"] == len(EXACT)
    kinds = {p["kind"]: p["documents"] for p in d["pairs"] if (p["kept"], p["removed"]) == ("curated", "web")}
    assert kinds == {"exact": len(EXACT), "near": len(EDITED)}
    for s in m["sources"].values():  # a few dozen long documents: within one document of the target
        assert abs(s["achieved_tokens"] - s["requested_tokens"]) < 600
    assert m["sources"]["web"]["available_tokens"] == d["sources"]["web"]["tokens_after"]
    assert not (root / "one" / "_near-pairs.json").exists()


def test_inspect_doc_says_near_duplicate_of(near_run):
    root, _ = near_run
    web, curated = _ids(root, "web"), _ids(root, "curated")
    rc, out, err = mixprep("inspect", root / "one", "--doc", f"web:{web[16]}", "--cache", root / "cache-one")
    assert rc == 0, err
    assert f"dropped as a near duplicate of curated:{curated[EDITED[0]]}" in out


def test_near_dedup_with_two_workers_writes_the_same_bytes(near_run):
    root, _ = near_run
    _run(root, "two", "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    for name in sorted(os.listdir(root / "one")):
        if name.endswith((".bin", ".idx", ".parquet")) or name == "manifest.json":
            assert (root / "one" / name).read_bytes() == (root / "two" / name).read_bytes(), name


def test_near_clusters_reach_across_key_partitions(near_run, tmp_path, monkeypatch):
    """The run's near removals as pairs (removed, kept) give the same clusters back: resolved in one
    partition and in 64 (a cluster's documents in different partitions, held back and joined), the same
    removals as the run's."""
    import pyarrow.parquet as pq
    from test_dedup_run import _resolve_in, resolutions_agree

    from pipeline.dedup import spill
    from pipeline.mix import dedup

    root, m = near_run
    t = pq.read_table(root / "one" / DEDUP_FILE).to_pydict()
    near = [i for i, k in enumerate(t["kind"]) if k == "near"]
    pairs = [((t["removed_source"][i], t["removed_part"][i], t["removed_row"][i]),
              (t["kept_source"][i], t["kept_part"][i], t["kept_row"][i])) for i in near]
    assert len(pairs) == len(EDITED)
    one = _resolve_in(root / "near.yaml", root, "cache-one", m, tmp_path / "one", pairs)
    monkeypatch.setattr(dedup, "PARTITION_BYTES", 64)
    monkeypatch.setattr(spill, "BUFFER_BYTES", 64)
    many = _resolve_in(root / "near.yaml", root, "cache-one", m, tmp_path / "many", pairs)
    resolutions_agree(one, many, root / "one" / DEDUP_FILE)
