"""Hugging Face datasets as a source (kind hf_dataset), offline, on datasets these tests write: local
folders in the hub's layout (a README ``configs:`` header picking files per config and split) and
``save_to_disk`` folders; read file by file, through Beam, into a token cache."""

import os

# Before `datasets` is imported (it reads these once): nothing here may reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import collections  # noqa: E402
import shutil  # noqa: E402

import datasets  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.testing.test_pipeline import TestPipeline  # noqa: E402
from conftest import TOKENIZER  # noqa: E402

from pipeline.cache import BuildCaches, TokenCache  # noqa: E402
from pipeline.document import Reject  # noqa: E402
from pipeline.errors import CorruptFileError, SourceError  # noqa: E402
from pipeline.sources import FileTally, SourceSpec, list_source_files, read_documents  # noqa: E402
from pipeline.sources.spec import DatasetRef  # noqa: E402
from pipeline.tokenizer import load_tokenizer  # noqa: E402

HUB_ID = "org/corpus"  # a hub-style id, found as a folder under the data root
README = """\
---
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: validation
    path: data/validation-*.parquet
- config_name: small
  data_files:
  - split: train
    path: data/train-00000-of-00002.parquet
---
# corpus
"""
TRAIN = {  # file -> texts; None and blank texts are rejected with their row
    "data/train-00000-of-00002.parquet": ["first doc", "second doc", None, ""],
    "data/train-00001-of-00002.parquet": ["third doc", "   ", "fourth doc"],
}


@pytest.fixture(autouse=True)
def _offline_datasets(tmp_path, monkeypatch):
    """`datasets` keeps its lock files in this test's folder, and stays offline."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def hub_layout(data_root) -> str:
    """A parquet dataset as the hub lays it out, at DATA_ROOT/org/corpus; returns the data root."""
    folder = data_root / HUB_ID
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text(README)
    for rel, texts in TRAIN.items():
        pq.write_table(pa.table({"text": pa.array(texts, pa.string()), "n": list(range(len(texts)))}),
                       folder / rel)
    pq.write_table(pa.table({"text": ["held out"], "n": [0]}), folder / "data/validation-00000-of-00001.parquet")
    return str(data_root)


def spec_for(path, **kw) -> SourceSpec:
    ref = {k: kw.pop(k) for k in ("name", "split", "revision") if k in kw}
    return SourceSpec("hf", "hf_dataset", dataset=DatasetRef(str(path), **ref), **kw)


def read_all(spec, files):
    """Every Document and Reject of every file, and the summed tally."""
    items, total = [], collections.Counter()
    for sf in files:
        tally = FileTally()
        items += list(read_documents(spec, sf, tally))
        total.update(read=tally.read, forwarded=tally.forwarded, rejected=sum(tally.rejected.values()))
    return [i for i in items if not isinstance(i, Reject)], [i for i in items if isinstance(i, Reject)], total


# --- a hub-layout folder: config and split pick the files -------------------------------------------


def test_the_split_and_config_pick_the_data_files(tmp_path):
    root = hub_layout(tmp_path / "hub")
    files = list_source_files(spec_for(HUB_ID), root)
    assert [f.rel for f in files] == list(TRAIN)
    assert [f.size for f in files] == [os.path.getsize(f.path) for f in files]
    assert {f.folder for f in files} == {"data"}
    validation = list_source_files(spec_for(HUB_ID, split="validation"), root)
    assert [f.rel for f in validation] == ["data/validation-00000-of-00001.parquet"]
    small = list_source_files(spec_for(HUB_ID, name="small"), root)
    assert [f.rel for f in small] == ["data/train-00000-of-00002.parquet"]


def test_hub_layout_documents_ids_and_rejects(tmp_path):
    spec = spec_for(HUB_ID)
    docs, rejects, total = read_all(spec, list_source_files(spec, hub_layout(tmp_path / "hub")))
    assert [(d.doc_id, d.text) for d in docs] == [
        ("data/train-00000-of-00002.parquet#0", "first doc"),
        ("data/train-00000-of-00002.parquet#1", "second doc"),
        ("data/train-00001-of-00002.parquet#0", "third doc"),
        ("data/train-00001-of-00002.parquet#2", "fourth doc"),
    ]
    assert [(r.file, r.position, r.reason) for r in rejects] == [
        ("data/train-00000-of-00002.parquet", "#2", "missing_text"),
        ("data/train-00000-of-00002.parquet", "#3", "empty_text"),
        ("data/train-00001-of-00002.parquet", "#1", "empty_text"),
    ]
    assert total == {"read": 7, "forwarded": 4, "rejected": 3}


def test_ids_are_the_same_wherever_the_dataset_lives(tmp_path):
    a = hub_layout(tmp_path / "a")
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(os.path.join(a, HUB_ID), b)
    here, there = spec_for(HUB_ID), spec_for(b)  # relative to the data root / absolute
    ids = [[d.doc_id for d in read_all(s, list_source_files(s, r))[0]] for s, r in ((here, a), (there, "/nowhere"))]
    assert ids[0] == ids[1]
    assert list_source_files(here, a) == list_source_files(here, a)


def test_json_lines_keep_their_lines_and_per_line_rejects(tmp_path):
    folder = tmp_path / "lines"
    (folder / "data").mkdir(parents=True)
    (folder / "data/train.jsonl").write_text('{"text": "a"}\n{broken\n{"text": 7}\n{"text": "b", "url": "u"}\n')
    (folder / "data/validation.jsonl").write_text('{"text": "v"}\n')
    spec = spec_for(folder)
    files = list_source_files(spec, str(tmp_path))
    assert [f.rel for f in files] == ["data/train.jsonl"]  # split from the file names, as on the hub
    docs, rejects, _ = read_all(spec, files)
    assert [(d.doc_id, d.text, d.meta) for d in docs] == [("data/train.jsonl:1", "a", {}),
                                                          ("data/train.jsonl:4", "b", {"url": "u"})]
    assert [(r.position, r.reason) for r in rejects] == [("2", "malformed_json"), ("3", "wrong_type")]


def test_other_formats_stream_one_file_per_shard(tmp_path):
    """csv is read by `datasets` itself: shard i of the split is data file i, rows counted per file."""
    folder = tmp_path / "csv"
    (folder / "data").mkdir(parents=True)
    (folder / "data/train-0.csv").write_text("text,n\nhello,1\n,2\nworld,3\n")
    (folder / "data/train-1.csv").write_text('text,n\nfoo,1\n"  ",2\nbar,3\n')
    spec = spec_for(folder)
    files = list_source_files(spec, str(tmp_path))
    docs, rejects, total = read_all(spec, list(reversed(files)))  # any file alone, in any order
    assert sorted((d.doc_id, d.text) for d in docs) == [
        ("data/train-0.csv#0", "hello"), ("data/train-0.csv#2", "world"),
        ("data/train-1.csv#0", "foo"), ("data/train-1.csv#2", "bar")]
    assert sorted((r.file, r.position, r.reason) for r in rejects) == [
        ("data/train-0.csv", "#1", "missing_text"), ("data/train-1.csv", "#1", "empty_text")]
    with pytest.raises(CorruptFileError, match="no column 'body'"):
        read_all(spec_for(folder, text_field="body"), files[:1])


def test_arrow_data_files_in_the_stream_or_the_file_format(tmp_path):
    folder = tmp_path / "arrow"
    (folder / "data").mkdir(parents=True)
    table = pa.table({"text": ["one", None, "two"]})
    for name, writer in (("train-0.arrow", pa.ipc.new_stream), ("train-1.arrow", pa.ipc.new_file)):
        with pa.OSFile(str(folder / "data" / name), "wb") as sink, writer(sink, table.schema) as w:
            w.write_table(table, max_chunksize=2)
    spec = spec_for(folder)
    docs, rejects, total = read_all(spec, list_source_files(spec, str(tmp_path)))
    assert [d.doc_id for d in docs] == ["data/train-0.arrow#0", "data/train-0.arrow#2",
                                        "data/train-1.arrow#0", "data/train-1.arrow#2"]
    assert [(r.position, r.reason) for r in rejects] == [("#1", "missing_text")] * 2


def test_unknown_split_or_config_names_what_there_is(tmp_path):
    root = hub_layout(tmp_path / "hub")
    with pytest.raises(SourceError, match="no split 'test'.*train, validation"):
        list_source_files(spec_for(HUB_ID, split="test"), root)
    with pytest.raises(SourceError, match="'nope'.*dataset.name"):
        list_source_files(spec_for(HUB_ID, name="nope"), root)
    with pytest.raises(SourceError, match="hf://datasets/org/elsewhere.*offline, download it"):
        list_source_files(spec_for("org/elsewhere"), root)  # not under the data root: a hub id


def test_a_damaged_file_is_corrupt_or_skipped(tmp_path):
    root = hub_layout(tmp_path / "hub")
    spec = spec_for(HUB_ID)
    files = list_source_files(spec, root)
    damaged = files[1].path
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) // 2)
    with pytest.raises(CorruptFileError, match="train-00001-of-00002.parquet"):
        read_all(spec, files)
    docs, rejects, _ = read_all(spec_for(HUB_ID, skip_corrupt_files=True), files)
    assert len(docs) == 2 and rejects[-1].reason == "corrupt_file" and rejects[-1].file == files[1].rel


# --- save_to_disk folders -----------------------------------------------------------------------------


SAVED = ["alpha", "", "beta", None, "gamma", "delta"]


def saved(folder, **columns) -> str:
    columns = columns or {"text": SAVED, "id": list(range(len(SAVED)))}
    datasets.Dataset.from_dict(columns).save_to_disk(str(folder), num_shards=2)
    return str(folder)


def test_save_to_disk_folder(tmp_path):
    saved(tmp_path / "root" / "saved")
    spec = spec_for("saved")  # relative to the data root
    files = list_source_files(spec, str(tmp_path / "root"))
    assert [(f.rel, f.size) for f in files] == [
        ("data-00000-of-00002.arrow", os.path.getsize(files[0].path)),
        ("data-00001-of-00002.arrow", os.path.getsize(files[1].path))]
    docs, rejects, total = read_all(spec, files)
    assert [(d.doc_id, d.text) for d in docs] == [
        ("data-00000-of-00002.arrow#0", "alpha"), ("data-00000-of-00002.arrow#2", "beta"),
        ("data-00001-of-00002.arrow#1", "gamma"), ("data-00001-of-00002.arrow#2", "delta")]
    assert [(r.file, r.position, r.reason) for r in rejects] == [
        ("data-00000-of-00002.arrow", "#1", "empty_text"), ("data-00001-of-00002.arrow", "#0", "missing_text")]
    assert total == {"read": 6, "forwarded": 4, "rejected": 2}


def test_save_to_disk_dataset_dict_split(tmp_path):
    d = datasets.Dataset.from_dict({"text": ["a", "b", "c"]})
    datasets.DatasetDict({"train": d, "test": d.select([2])}).save_to_disk(str(tmp_path / "dd"))
    spec = spec_for(tmp_path / "dd", split="test")
    files = list_source_files(spec, "/unused")
    assert [(f.rel, f.folder) for f in files] == [("test/data-00000-of-00001.arrow", "test")]
    assert [d.doc_id for d in read_all(spec, files)[0]] == ["test/data-00000-of-00001.arrow#0"]
    with pytest.raises(SourceError, match="no split 'validation'; its splits: train, test"):
        list_source_files(spec_for(tmp_path / "dd", split="validation"), "/unused")


def test_saved_arrow_without_the_column_or_truncated_is_corrupt(tmp_path):
    folder = saved(tmp_path / "s", body=["x", "y", "z"])
    files = list_source_files(spec_for(folder), "/unused")
    with pytest.raises(CorruptFileError, match="no column 'text'"):
        read_all(spec_for(folder), files)
    spec = spec_for(folder, text_field="body")
    with open(files[0].path, "r+b") as f:
        f.truncate(os.path.getsize(files[0].path) - 20)
    with pytest.raises(CorruptFileError, match="data-00000-of-00002.arrow"):
        read_all(spec, files)


# --- end to end: Beam tokenizes both kinds of dataset into caches ---------------------------------------


def test_token_caches_from_datasets_through_beam(tmp_path):
    root = hub_layout(tmp_path / "hub")
    saved(tmp_path / "hub" / "saved")
    hub, disk = spec_for(HUB_ID), SourceSpec("disk", "hf_dataset", dataset=DatasetRef("saved"))
    listed = {s.name: list_source_files(s, root) for s in (hub, disk)}
    tok = load_tokenizer(TOKENIZER)
    p = TestPipeline(options=PipelineOptions([]))
    transform = BuildCaches([(s, listed[s.name]) for s in (hub, disk)], tok, str(tmp_path / "cache"))
    _ = p | "TokenizeSources" >> transform
    result = p.run()
    result.wait_until_finish()
    counters = collections.Counter()
    for c in result.metrics().query(MetricsFilter())["counters"]:
        counters[f"{c.key.metric.namespace}/{c.key.metric.name}"] += c.committed
    for spec, (n_read, n_docs) in ((hub, (7, 4)), (disk, (6, 4))):
        cache = TokenCache(transform.directories[spec.name])
        acc = cache.manifest["accounting"]
        assert (acc["read"], acc["forwarded"], acc["rejected"]) == (n_read, n_docs, n_read - n_docs)
        assert cache.stats["documents"] == n_docs == counters[f"cache:{spec.name}/documents"]
        assert counters[f"source:{spec.name}/read"] == n_read
        assert cache.manifest["spec"]["dataset"]["path"] == spec.dataset.path
        docs = read_all(spec, listed[spec.name])[0]
        ids = [i for part in range(len(listed[spec.name])) for i in cache.doc_table(part).column("doc_id").to_pylist()]
        assert ids == [d.doc_id for d in docs]
        decoded = [tok.tokenizer.decode(cache.tokens(0)[0][:-1].tolist())]
        assert decoded == [docs[0].text]
