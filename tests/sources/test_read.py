"""Every reader on the bundled samples and the bad-input set, through a real Beam pipeline."""

import base64
import collections
import gzip
import json
import os

import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from conftest import BAD, SAMPLES

from pipeline.errors import SourceError
from pipeline.sources import ReadSource, SourceSpec, list_source_files, normalize_subset

RP = "togethercomputer/RedPajama-Data-1T"


_COLLECTED = {}


class _Collect:
    """An assert_that matcher that keeps what it sees (the local runner runs it in this process)."""

    def __init__(self, key):
        self.key = key

    def __call__(self, items):
        _COLLECTED[self.key] = list(items)


def run_read(spec: SourceSpec, data_root: str = SAMPLES, options=()):
    """Run ReadSource in a TestPipeline; return (documents, rejects, counters) as plain values."""
    _COLLECTED.clear()
    p = TestPipeline(options=PipelineOptions(list(options)))
    out = p | f"ReadSource[{spec.name}]" >> ReadSource(spec, data_root)
    assert_that(out.documents, _Collect("docs"), label="CollectDocuments")
    assert_that(out.rejects, _Collect("rejects"), label="CollectRejects")
    result = p.run()
    result.wait_until_finish()
    counters = collections.Counter()
    for c in result.metrics().query(MetricsFilter().with_namespace(f"source:{spec.name}"))["counters"]:
        counters[c.key.metric.name] += c.committed
    return _COLLECTED["docs"], _COLLECTED["rejects"], counters


def assert_accounted(docs, rejects, counters):
    """Documents read = forwarded + rejected (+ excluded by subset), and the outputs agree."""
    assert counters["read"] == counters["forwarded"] + counters["rejected"] + counters["excluded_subset"]
    assert counters["forwarded"] == len(docs)
    assert counters["rejected"] == len([r for r in rejects if r.reason != "corrupt_file"])
    for reason, n in collections.Counter(r.reason for r in rejects if r.reason != "corrupt_file").items():
        assert counters[f"rejected_{reason}"] == n


# An independent re-read of the sample files, in plain Python: the oracle for ids and texts.
def plain_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def expected_json(root, rels, text="text", keep=lambda rec: True):
    out = {}
    for rel in rels:
        for i, rec in enumerate(plain_lines(os.path.join(SAMPLES, root, rel)), start=1):
            if keep(rec):
                out[f"{rel}:{i}"] = rec[text]
    return out


def expected_parquet(root, rels, text):
    out = {}
    for rel in rels:
        for i, t in enumerate(pq.read_table(os.path.join(SAMPLES, root, rel)).column(text).to_pylist()):
            out[f"{rel}#{i}"] = t
    return out


def rels(root, suffix, folder=""):
    base = os.path.join(SAMPLES, root)
    found = []
    for dirpath, _, files in os.walk(base):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), base)
            if rel.endswith(suffix) and rel.startswith(folder):
                found.append(rel)
    return sorted(found)


def by_id(docs):
    return {d.doc_id: d.text for d in docs}


def test_refinedweb_parquet():
    spec = SourceSpec("refinedweb", "refinedweb", root="tiiuae/falcon-refinedweb")
    docs, rejects, counters = run_read(spec)
    root = "tiiuae/falcon-refinedweb"
    assert by_id(docs) == expected_parquet(root, rels(root, ".parquet"), "content")
    assert len(docs) == 395 and counters["files"] == 4 and not rejects
    assert {d.subset for d in docs} == {"data"}
    assert all(d.meta["url"].startswith("http") for d in docs)
    assert_accounted(docs, rejects, counters)


def test_c4_gzip_train_files_only():
    spec = SourceSpec("c4", "c4", root="allenai/c4")
    docs, rejects, counters = run_read(spec)
    assert by_id(docs) == expected_json("allenai/c4", rels("allenai/c4", ".json.gz", "en/c4-train"))
    assert len(docs) == 469 and counters["files"] == 4
    assert "en/c4-train.00000-of-01024.json.gz:1" in by_id(docs)  # lines count from 1
    assert_accounted(docs, rejects, counters)


def test_redpajama_subsets_and_both_meta_layouts():
    spec = SourceSpec("redpajama", "redpajama", root=RP, exclude=("c4", "Common Crawl"))
    docs, rejects, counters = run_read(spec)
    kept = [r for r in rels(RP, ".jsonl") if r.split("/")[0] not in ("c4", "common_crawl")]
    assert by_id(docs) == expected_json(RP, kept)
    assert collections.Counter(d.subset for d in docs) == {
        "arxiv": 86, "book": 30, "github": 50, "stackexchange": 50, "wikipedia": 50}
    wiki = [d for d in docs if d.subset == "wikipedia"]
    assert all("url" in d.meta and "text" not in d.meta for d in wiki)  # `meta` dict or top-level keys
    assert_accounted(docs, rejects, counters)


def test_redpajama_zstd_subset_by_include():
    spec = SourceSpec("redpajama", "redpajama", root=RP, include=("common_crawl",))
    docs, _, counters = run_read(spec)
    assert by_id(docs) == expected_json(RP, rels(RP, ".jsonl.zst", "common_crawl"))
    assert len(docs) == 115 and counters["files"] == 2


def test_pile_subsets_by_name_case_and_space_insensitive():
    spec = SourceSpec("pile", "pile", root="EleutherAI/pile", exclude=("pile cc",))
    docs, rejects, counters = run_read(spec)
    files = rels("EleutherAI/pile", ".jsonl.zst", "train/")
    expected = expected_json("EleutherAI/pile", files, keep=lambda r: r["meta"]["pile_set_name"] != "Pile-CC")
    assert by_id(docs) == expected
    assert counters["read"] == 234 and counters["excluded_subset"] == 234 - len(expected) > 0
    assert "Pile-CC" not in {d.subset for d in docs} and len({d.subset for d in docs}) == 21
    assert_accounted(docs, rejects, counters)


def test_starcoder_language_folders():
    spec = SourceSpec("starcoder", "starcoder", root="bigcode/starcoderdata", include=("Python",))
    docs, _, counters = run_read(spec)
    root = "bigcode/starcoderdata"
    assert by_id(docs) == expected_parquet(root, rels(root, ".parquet", "python/"), "content")
    assert len(docs) == 136 and {d.subset for d in docs} == {"python"}
    assert any("\n    " in d.text for d in docs)  # indentation survives


def test_generic_files_with_custom_text_field():
    spec = SourceSpec("internal", "files", root="internal", paths=("notes/*.jsonl", "notes/*.parquet"),
                      text_field="body")
    docs, rejects, counters = run_read(spec)
    expected = {**expected_json("internal", ["notes/part-00000.jsonl"], text="body"),
                **expected_parquet("internal", ["notes/part-00001.parquet"], "body")}
    assert by_id(docs) == expected and len(docs) == 80
    assert_accounted(docs, rejects, counters)


def test_bad_records_are_rejected_counted_and_kept():
    spec = SourceSpec("rp", "redpajama", root="redpajama", paths=("*/*.jsonl",))
    docs, rejects, counters = run_read(spec, BAD)
    assert sorted(d.doc_id for d in docs) == sorted(
        [f"arxiv/arxiv_bad.jsonl:{i}" for i in range(1, 6)] + [f"book/book.jsonl:{i}" for i in (1, 2, 3, 6)])
    got = sorted((r.file, r.position, r.reason) for r in rejects)
    assert got == [
        ("arxiv/arxiv_bad.jsonl", "10", "empty_text"),
        ("arxiv/arxiv_bad.jsonl", "6", "malformed_json"),
        ("arxiv/arxiv_bad.jsonl", "7", "missing_text"),
        ("arxiv/arxiv_bad.jsonl", "8", "invalid_utf8"),
        ("arxiv/arxiv_bad.jsonl", "9", "empty_text"),
        ("book/book.jsonl", "4", "wrong_type"),
        ("book/book.jsonl", "5", "blank_line"),
    ]
    assert counters["read"] == 16 and counters["rejected"] == 7
    assert_accounted(docs, rejects, counters)
    # Nothing is lost: the raw bytes of the bad UTF-8 line come back exactly.
    bad_utf8 = next(r for r in rejects if r.reason == "invalid_utf8")
    with open(os.path.join(BAD, "redpajama", "arxiv", "arxiv_bad.jsonl"), "rb") as f:
        line8 = f.read().split(b"\n")[7]
    assert base64.b64decode(bad_utf8.to_json()["raw_base64"]) == line8 == bad_utf8.raw


def test_pile_missing_subset_and_name_variants():
    spec = SourceSpec("pile", "pile", root="pile", paths=("val.jsonl.zst",), exclude=("PILE-CC",))
    docs, rejects, counters = run_read(spec, BAD)
    assert [r.reason for r in rejects] == ["missing_subset"] and rejects[0].position == "3"
    assert counters["excluded_subset"] == 2  # "Pile-CC" and "PILE-CC"
    # Names are kept as written; matching normalizes case, spaces, dashes and underscores.
    assert {normalize_subset(d.subset) for d in docs} == {"stackexchange", "wikipedia(en)"}
    assert_accounted(docs, rejects, counters)


def test_parquet_null_and_empty_rows():
    spec = SourceSpec("rw", "refinedweb", root="refinedweb", paths=("data/train-00002-*.parquet",))
    docs, rejects, counters = run_read(spec, BAD)
    assert sorted((r.position, r.reason) for r in rejects) == [("#2", "missing_text"), ("#4", "empty_text")]
    assert len(docs) == 4
    assert_accounted(docs, rejects, counters)


@pytest.mark.parametrize(
    "root, paths, kind, words",
    [
        ("c4", ("en/*.json.gz",), "c4", ["c4-train.00000-of-01024.json.gz", "truncated"]),
        ("pile", ("train/*.jsonl.zst",), "pile", ["train/00.jsonl.zst", "truncated"]),
        ("refinedweb", ("data/train-00000-*.parquet",), "refinedweb", ["train-00000-of-05534", "unreadable parquet"]),
        ("refinedweb", ("data/train-00001-*.parquet",), "refinedweb", ["train-00001-of-05534", "no column 'content'"]),
    ],
)
def test_structural_faults_stop_the_run_naming_the_file(root, paths, kind, words):
    spec = SourceSpec("bad", kind, root=root, paths=paths)
    with pytest.raises(Exception) as e:
        run_read(spec, BAD)
    for w in words:
        assert w in str(e.value)
    assert "skip_corrupt_files" in str(e.value)  # says what to do


def test_corrupt_files_skipped_when_configured_are_counted():
    spec = SourceSpec("pile", "pile", root="pile", paths=("train/*.jsonl.zst",), skip_corrupt_files=True)
    docs, rejects, counters = run_read(spec, BAD)
    assert counters["corrupt_files"] == 1
    corrupt = [r for r in rejects if r.reason == "corrupt_file"]
    assert len(corrupt) == 1 and corrupt[0].file == "train/00.jsonl.zst"
    assert len(docs) == counters["forwarded"] > 0  # what was read before the fault stands
    assert_accounted(docs, rejects, counters)


def test_ids_are_stable_across_runs():
    spec = SourceSpec("pile", "pile", root="EleutherAI/pile", paths=("*.jsonl.zst", "train/*.jsonl.zst"))
    first, _, _ = run_read(spec)
    second, _, _ = run_read(spec)
    assert sorted((d.doc_id, d.subset, d.text) for d in first) == sorted((d.doc_id, d.subset, d.text) for d in second)
    assert len(first) == 294


def test_s3_data_root_reads_the_same_documents(s3_server):
    root = s3_server(os.path.join(SAMPLES, "allenai"), "corpora", "hub/allenai")
    spec = SourceSpec("c4", "c4", root="allenai/c4")
    FileSystems.set_options(PipelineOptions(s3_server.options))
    files = ReadSource(spec, "s3://corpora/hub").files
    c4 = "s3://corpora/hub/allenai/c4/en"
    assert [f.path for f in files] == [f"{c4}/c4-train.0000{i}-of-01024.json.gz" for i in range(4)]
    remote, _, counters = run_read(spec, root.rsplit("/", 1)[0], s3_server.options)
    local, _, _ = run_read(spec)
    assert by_id(remote) == by_id(local) and len(remote) == 469


def test_hub_dataset_from_a_local_folder_in_the_hub_layout():
    spec = SourceSpec("c4", "c4", hub=os.path.join(SAMPLES, "allenai", "c4"))
    docs, _, _ = run_read(spec, data_root="/nonexistent")
    local, _, _ = run_read(SourceSpec("c4", "c4", root="allenai/c4"))
    assert by_id(docs) == by_id(local)


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = SourceSpec("rw", "refinedweb", hub="tiiuae/falcon-refinedweb")
    with pytest.raises(SourceError, match="cannot list the Hugging Face hub dataset 'tiiuae/falcon-refinedweb'"):
        list_source_files(spec, SAMPLES)


def test_a_glob_matching_nothing_is_an_error():
    spec = SourceSpec("c4", "c4", root="allenai/c4", paths=("en/nothing-*.json.gz",))
    with pytest.raises(SourceError, match=r"no file matches 'en/nothing-\*.json.gz'"):
        list_source_files(spec, SAMPLES)


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("suffix, pack", [(".jsonl", bytes), (".json.gz", lambda b: gzip.compress(b, mtime=0)),
                                          (".jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_a_leading_byte_order_mark_is_skipped_and_counted(tmp_path, suffix, pack):
    """Only the file's first bytes: a BOM inside a text is text, one starting a later line is no JSON."""
    lines = [BOM + b'{"text": "first"}', '{"text": "in\ufeffside"}'.encode(), BOM + b'{"text": "later"}']
    os.makedirs(tmp_path / "src")
    (tmp_path / "src" / f"a{suffix}").write_bytes(pack(b"\n".join(lines) + b"\n"))
    docs, rejects, counters = run_read(SourceSpec("bom", "files", root="src", paths=("*",)), str(tmp_path))
    assert sorted((d.doc_id, d.text) for d in docs) == [(f"a{suffix}:1", "first"), (f"a{suffix}:2", "in\ufeffside")]
    assert [(r.position, r.reason) for r in rejects] == [("3", "malformed_json")]
    assert counters["bom_skipped"] == 1 and counters["read"] == 3
    assert_accounted(docs, rejects, counters)


def test_refused_paths_are_counted_by_reason(tmp_path):
    os.makedirs(tmp_path / "src" / "dir.jsonl")
    (tmp_path / "src" / "a.jsonl").write_bytes(b'{"text": "kept"}\n')
    os.symlink("gone", tmp_path / "src" / "b.jsonl")
    os.mkfifo(tmp_path / "src" / "c.jsonl")
    spec = SourceSpec("refusing", "files", root="src", paths=("*.jsonl",), skip_corrupt_files=True)
    docs, rejects, counters = run_read(spec, str(tmp_path))
    assert [d.text for d in docs] == ["kept"] and rejects == []
    assert counters["files"] == 1 and counters["files_refused"] == 3
    assert {k: v for k, v in counters.items() if k.startswith("files_refused_")} == {
        "files_refused_directory": 1, "files_refused_dangling_link": 1, "files_refused_special_file": 1}
