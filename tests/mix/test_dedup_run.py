"""Exact dedup in real runs (`mixprep run` on small real files): a document copied from one source into
another, exactly and with whitespace / Unicode (NFD) variants, is selected once, from the priority source;
the plan's shares are exact over what remains; the manifest, report and `inspect --doc` say what was removed;
1 and 2 workers write the same bytes. The expected removals come from an oracle built here from the input
files (``content.normalize`` of each text), not from the pipeline's own tables."""

import collections
import json
import os
import random
import unicodedata

import numpy as np
import pytest
from conftest import TOKENIZER, WORDS, mixprep, sampled_corpus

from pipeline.cache import TokenCache
from pipeline.dedup.content import normalize
from pipeline.inspect import Provenance
from pipeline.layout import DEDUP_FILE, cache_dir
from pipeline.sources import SourceSpec, list_source_files, read_documents

ACCENTED = ["café", "naïve", "résumé", "façade", "über", "jalapeño"]
EXACT, SPACES, NFD = range(3), range(3, 6), range(6, 9)  # curated documents copied into web, by kind of copy

MIXTURE = """
name: dd
total_tokens: {total}
seq_len: 63
tokenizer: {tokenizer}
shards: 2
tokenize_whole: true
{dedup}
sources:
  - {{name: web, kind: files, root: web, paths: ["*.jsonl"], weight: 0.5, max_repetition: 4}}
  - {{name: curated, kind: files, root: curated, paths: ["*.jsonl"], weight: 0.5, max_repetition: 4}}
"""
ON = "dedup: {exact: true, priority: [curated]}"


def _text(rng: random.Random, tag: str) -> str:
    words = [rng.choice(WORDS + ACCENTED) for _ in range(rng.randint(30, 90))]
    words.insert(rng.randrange(len(words)), rng.choice(ACCENTED))  # every text has an NFD form of its own
    return " ".join(words) + f" {tag}."


def _corpus(root):
    """curated: 24 documents; web: 30 of its own, then copies of 9 curated ones (and one web text twice)."""
    rng = random.Random(26)
    curated = [_text(rng, f"c{i}") for i in range(24)]
    web = [_text(rng, f"w{i}") for i in range(30)]
    web += [curated[i] for i in EXACT]
    web += ["  " + curated[i].replace(" ", "\t \n", 3).replace(" ", "\u00a0", 1) + "\r\n" for i in SPACES]
    web += [unicodedata.normalize("NFD", curated[i]) + "\n" for i in NFD]
    web.append(web[0].replace(" ", "  "))  # a duplicate inside one source: removed too
    for name, texts in (("curated", curated), ("web", web)):
        os.makedirs(root / name, exist_ok=True)
        half = len(texts) // 2
        for k, chunk in enumerate((texts[:half], texts[half:])):
            with open(root / name / f"part-{k}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in chunk)


def _documents(root) -> dict[str, dict[str, str]]:
    """{source: {doc_id: text}} as the real reader reads the input files."""
    out = {}
    for name in ("web", "curated"):
        spec = SourceSpec(name, "files", root=name, paths=("*.jsonl",))
        out[name] = {d.doc_id: d.text for sf in list_source_files(spec, str(root)) for d in read_documents(spec, sf)}
    return out


def _run(root, out, cache, dedup=ON, total=18_000, *beam):
    path = root / f"{out}.yaml"
    path.write_text(MIXTURE.format(total=total, tokenizer=TOKENIZER, dedup=dedup))
    rc, stdout, err = mixprep("run", "--mixture", path, "--data-root", root, "--out", root / out, "--cache",
                              root / cache, *(beam or ["--direct_running_mode=in_memory"]))
    assert rc == 0, err[-3000:]
    return json.loads((root / out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    _corpus(root)
    return root


@pytest.fixture(scope="module")
def run(corpus):
    return _run(corpus, "on", "cache")


def _tables(root, manifest, cache="cache"):
    """{source: {doc_id: (part, row, n_tokens)}} from the caches the run read."""
    out = {}
    for name, s in manifest["sources"].items():
        c = TokenCache(cache_dir(str(root / cache), name, s["cache_fingerprint"]))
        out[name] = {}
        for part in range(len(c.parts)):
            t = c.doc_table(part, columns=["doc_id", "n_tokens"]).to_pydict()
            for row, (doc_id, n) in enumerate(zip(t["doc_id"], t["n_tokens"])):
                out[name][doc_id] = (part, row, n)
    return out


def _expected_removed(docs) -> dict[tuple[str, str], tuple[str, str]]:
    """Oracle: {(source, doc_id) removed: (source, doc_id) kept}, by normalized text; curated's copy first."""
    groups = collections.defaultdict(list)
    for name in ("curated", "web"):
        for doc_id, text in docs[name].items():
            groups[normalize(text)].append((name, doc_id))
    out = {}
    for members in groups.values():
        if len(members) > 1 and members[0][0] == "curated":
            out.update({m: members[0] for m in members[1:]})
    return out


def test_copies_across_sources_are_selected_once_from_the_priority_source(corpus, run):
    docs, tables = _documents(corpus), _tables(corpus, run)
    expected = _expected_removed(docs)
    assert len(expected) == len(EXACT) + len(SPACES) + len(NFD)  # every kind of copy is one text
    first = next(iter(docs["web"].values()))
    assert sum(normalize(t) == normalize(first) for t in docs["web"].values()) == 2  # the within-web pair

    # Every document copy in the shards, by (source, doc_id), from the provenance.
    prov = Provenance(str(corpus / "on"))
    by_place = {name: {(p, r): doc_id for doc_id, (p, r, _) in t.items()} for name, t in tables.items()}
    selected = collections.Counter()
    for k in range(len(prov.shards)):
        refs, _, names = prov.refs(k)
        for s, p, r in zip(refs["source"].tolist(), refs["part"].tolist(), refs["row"].tolist()):
            selected[(names[s], by_place[names[s]][(p, r)])] += 1
    texts = collections.defaultdict(set)
    for name, doc_id in selected:
        texts[normalize(docs[name][doc_id])].add((name, doc_id))
    assert all(len(v) == 1 for v in texts.values())  # no text comes from two documents
    for removed, kept in expected.items():
        assert selected[removed] == 0 and selected[kept] >= 1  # the curated copy, and only it
    # Every document dedup left is in the shards (epochs >= 1 everywhere): none lost with the copies.
    survivors = {(n, d) for n in docs for d in docs[n]} - set(expected)
    assert len(survivors - set(selected)) == 1  # the within-web copy dedup removed

    # The plan counted what remains: available tokens are the survivors' (with the copies they would be more).
    for name, s in run["sources"].items():
        left = sum(n for doc_id, (_, _, n) in tables[name].items() if (name, doc_id) in selected)
        assert s["available_tokens"] == left
        assert s["achieved_tokens"] == s["requested_tokens"]  # exact shares over the deduplicated sources


def test_the_manifest_and_report_count_removals_per_source_and_pair(corpus, run):
    docs, tables = _documents(corpus), _tables(corpus, run)
    expected = _expected_removed(docs)
    d = run["dedup"]
    curated_to_web = [p for p in d["pairs"] if (p["kept"], p["removed"]) == ("curated", "web")]
    tokens = sum(tables["web"][doc_id][2] for (_, doc_id) in expected)
    assert curated_to_web == [{"kept": "curated", "removed": "web", "kind": "exact", "documents": len(expected),
                               "tokens": tokens}]
    web_to_web = [p for p in d["pairs"] if (p["kept"], p["removed"]) == ("web", "web")]
    assert len(web_to_web) == 1 and web_to_web[0]["documents"] == 1
    web = d["sources"]["web"]
    assert web["documents_before"] == len(docs["web"]) and web["exact"]["documents"] == len(expected) + 1
    assert web["tokens_after"] == run["sources"]["web"]["available_tokens"]
    assert d["sources"]["curated"]["exact"] == {"documents": 0, "tokens": 0}
    assert web["share_after"] < web["share_before"]
    assert d["documents_removed"] == len(expected) + 1
    report = (corpus / "on" / "report.md").read_text()
    assert "### Duplicates removed" in report and f"| `curated` | `web` | exact | {len(expected)} |" in report


def test_inspect_doc_names_the_document_kept(corpus, run):
    docs = _documents(corpus)
    (source, doc_id), (kept_source, kept_id) = sorted(_expected_removed(docs).items())[0]
    rc, out, err = mixprep("inspect", corpus / "on", "--doc", f"{source}:{doc_id}", "--cache", corpus / "cache")
    assert rc == 0, err
    assert "0 copies" in out and f"dropped as an exact duplicate of {kept_source}:{kept_id}" in out


def test_one_and_two_workers_write_the_same_bytes(corpus, run):
    _run(corpus, "two", "cache2", ON, 18_000, "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    for name in sorted(os.listdir(corpus / "on")):  # (the trainer files name their folder: not compared)
        if name.endswith((".bin", ".idx", ".parquet")) or name == "manifest.json":
            assert (corpus / "on" / name).read_bytes() == (corpus / "two" / name).read_bytes(), name
    assert (corpus / "two" / DEDUP_FILE).exists()


def test_without_dedup_every_copy_counts(corpus, run):
    off = _run(corpus, "off", "cache", "dedup: {exact: false}")
    assert "dedup" not in off and not (corpus / "off" / DEDUP_FILE).exists()
    tables = _tables(corpus, off)
    assert off["sources"]["web"]["available_tokens"] == sum(n for _, _, n in tables["web"].values())
    assert off["sources"]["web"]["available_tokens"] > run["sources"]["web"]["available_tokens"]
    assert off["sources"]["web"]["cache_fingerprint"] == run["sources"]["web"]["cache_fingerprint"]  # one cache


def test_a_sampled_source_is_deduplicated_over_what_was_tokenized(tmp_path):
    """Sources a and b hold far more than the mixture takes, so only samples are tokenized: copies of a's
    documents in b are removed among the sampled documents, and the shares stay exact."""
    sampled_corpus(tmp_path, "a", 4, 8000, seed=1)
    sampled_corpus(tmp_path, "b", 4, 8000, seed=2)
    first = (tmp_path / "a" / "part-0.jsonl").read_text().splitlines()
    copies = [json.loads(x)["text"].replace(" ", "  ") for x in first]
    with open(tmp_path / "b" / "part-3.jsonl", "a") as f:  # a's first file again in b, spaces doubled
        f.writelines(json.dumps({"text": t}) + "\n" for t in copies)
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"""
name: sampled
total_tokens: 200000
seq_len: 128
tokenizer: {TOKENIZER}
shards: 2
length_buckets: [32]
dedup: {{priority: [a]}}
sources:
  - {{name: a, kind: files, root: a, paths: ["*.jsonl"], weight: 0.6, max_repetition: 1}}
  - {{name: b, kind: files, root: b, paths: ["*.jsonl"], weight: 0.4, max_repetition: 1}}
""")
    rc, _, err = mixprep("run", "--mixture", mix, "--data-root", tmp_path, "--out", tmp_path / "out", "--cache",
                         tmp_path / "cache", "--direct_running_mode=in_memory")
    assert rc == 0, err[-3000:]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(s["tokenized"]["sampled"] for s in m["sources"].values())
    d = m["dedup"]
    pair = [p for p in d["pairs"] if (p["kept"], p["removed"]) == ("a", "b")]
    assert pair and pair[0]["documents"] > 0  # the copies both samples took
    # Every candidate the caches hold is counted before; the removed are never selected.
    for name, s in m["sources"].items():
        assert s["achieved_tokens"] == s["requested_tokens"]
        assert d["sources"][name]["documents_after"] == d["sources"][name]["documents_before"] - \
            d["sources"][name]["exact"]["documents"]
    removed = set(zip(*_removed_places(tmp_path / "out", "b")))
    prov = Provenance(str(tmp_path / "out"))
    for k in range(len(prov.shards)):
        refs, _, names = prov.refs(k)
        mine = refs[refs["source"] == names.index("b")]
        assert not set(zip(mine["part"].tolist(), mine["row"].tolist())) & removed


def _removed_places(out, source):
    import pyarrow.parquet as pq

    t = pq.read_table(out / DEDUP_FILE).to_pydict()
    keep = np.array(t["removed_source"]) == source
    return np.array(t["removed_part"])[keep].tolist(), np.array(t["removed_row"])[keep].tolist()


def _resolve_in(cfg_path, root, cache, m, out, near=None):
    from pipeline.config import load_mixture
    from pipeline.mix.dedup import resolve_duplicates

    caches = {n: TokenCache(cache_dir(str(root / cache), n, s["cache_fingerprint"])) for n, s in m["sources"].items()}
    return resolve_duplicates(load_mixture(str(cfg_path)), caches, {n: None for n in caches}, str(out), near)


def resolutions_agree(one, many, parquet) -> None:
    """Two resolutions (one partition, many) hold the same records, counts and digest, and the run's
    ``DEDUP_FILE`` lists the same removals."""
    import pyarrow.parquet as pq

    assert one.index["key_partitions"] == 1 < many.index["key_partitions"]
    a, b = (np.concatenate(list(r.records())) for r in (one, many))
    assert len(a) and np.array_equal(a, b)
    assert one.digest == many.digest and one.summary() == many.summary()
    t = pq.read_table(parquet).to_pydict()
    for k in ("removed_part", "removed_row", "n_tokens", "kept_part", "kept_row"):
        assert t[k] == a[k].tolist()
    assert t["removed_source"] == [one.sources[s] for s in a["removed_source"].tolist()]


def test_a_resolution_in_many_partitions_spilled_to_disk_removes_the_same(corpus, run, tmp_path, monkeypatch):
    """Partitioned by key into 64 partitions and by part into several files, every record through the
    disk: the same removals as one partition in memory, and as the run's. Resolved again with the same
    inputs, the folder is read, not written again."""
    from pipeline.dedup import spill
    from pipeline.mix import dedup

    one = _resolve_in(corpus / "on.yaml", corpus, "cache", run, tmp_path / "one")
    monkeypatch.setattr(dedup, "PARTITION_BYTES", 64)
    monkeypatch.setattr(spill, "BUFFER_BYTES", 64)
    many = _resolve_in(corpus / "on.yaml", corpus, "cache", run, tmp_path / "many")
    resolutions_agree(one, many, corpus / "on" / DEDUP_FILE)
    index = os.path.join(one.folder, "index.json")
    written = os.stat(index).st_mtime_ns
    again = _resolve_in(corpus / "on.yaml", corpus, "cache", run, tmp_path / "one")
    assert again.folder == one.folder and again.digest == one.digest and os.stat(index).st_mtime_ns == written
    assert not (corpus / "on" / "_dedup").exists()  # the run's working folder is gone


def test_the_resolution_memory_script_measures_this_resolution(corpus, run):
    """scripts/resolution_memory.py (docs/SCALING.md's figures) resolves the run's caches as the run did."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "resolution_memory.py")
    got = subprocess.run([sys.executable, script, "--mixture", str(corpus / "on.yaml"), "--cache",
                          str(corpus / "cache"), "--memory-mb", "4"], capture_output=True, text=True, check=True)
    row = json.loads(got.stdout.strip().splitlines()[-1])
    assert row["removed"] == run["dedup"]["documents_removed"] > 0 and row["key_partitions"] == 1
    assert row["candidates"] == sum(s["documents_before"] for s in run["dedup"]["sources"].values())
    assert row["peak_rss_mib"] >= row["peak_rss_mib_before"] > 0 and len(row["removals_sha256"]) == 64
