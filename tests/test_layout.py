"""pipeline.layout: every name on disk, the "done" checks, and readying an output folder."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from pipeline import layout
from pipeline.errors import OutputError


def test_names_are_the_ones_on_disk():
    assert layout.part_name(7) == "part-00007"
    assert layout.cache_dir("c", "pile", "0123456789abcdef0123") == os.path.join("c", "pile", "0123456789abcdef")
    assert layout.cache_dir("s3://b/c", "pile", "0123456789abcdef0123") == "s3://b/c/pile/0123456789abcdef"
    assert layout.source_dir_of("s3://b/c/pile/0123456789abcdef") == "s3://b/c/pile"
    assert layout.cache_of("s3://b/c/pile/0123456789abcdef/cache.json") == "s3://b/c/pile/0123456789abcdef"
    prefix = layout.part_prefix("s3://b/c", 3)
    assert (prefix, layout.part_summary(prefix), layout.doc_table(prefix), layout.rejects_file(prefix)) == (
        "s3://b/c/part-00003", "s3://b/c/part-00003.json", "s3://b/c/part-00003.docs.parquet",
        "s3://b/c/part-00003.rejects.jsonl")
    assert layout.reader_mark("s3://b/c", "run1") == "s3://b/c/readers/run1.json"
    assert layout.shard_names("stage1", 2) == ["stage1-00000-of-00002", "stage1-00001-of-00002"]
    out = "s3://b/o"
    assert layout.shard_files(out, "m-00000-of-00001") == ["s3://b/o/m-00000-of-00001.bin",
                                                           "s3://b/o/m-00000-of-00001.idx"]
    assert layout.sidecar_path(out, "m-00000-of-00001") == "s3://b/o/_shards/m-00000-of-00001.json"
    assert layout.provenance_rel("m-00000-of-00001") == "_provenance/m-00000-of-00001.refs.npy"
    assert layout.provenance_path(out, "m-00000-of-00001") == "s3://b/o/_provenance/m-00000-of-00001.refs.npy"
    assert layout.refs_path(out, 2, 17) == "s3://b/o/_refs/002-00017.refs"
    assert (layout.manifest_path(out), layout.plan_path(out)) == ("s3://b/o/manifest.json", "s3://b/o/_plan.json")
    assert layout.split_dir(out, "valid") == "s3://b/o/valid"
    assert layout.split_mixture("stage1", "valid") == "stage1-valid"
    assert layout.megatron_cache_dir(out) == "s3://b/o/megatron-cache"
    assert (layout.TOKENIZER_FILE, layout.NEOX_FILE, layout.ARGS_FILE, layout.ARGS_JSON, layout.REPORT_FILE) == (
        "tokenizer.json", "gpt-neox-data.json", "megatron-args.txt", "megatron-args.json", "report.md")
    assert layout.SPLIT_FOLDERS == ("valid", "test")


@pytest.mark.parametrize("name", ["stage1-00002-of-00004", "stage1-valid-00000-of-00001",
                                  "a-00000-of-00001-00003-of-00004"])
def test_a_shard_name_parses_back(name):
    mixture, index, count = layout.parse_shard_name(name)
    assert layout.shard_name(mixture, index, count) == name


@pytest.mark.parametrize("name", ["stage1-2-of-4", "stage1-00002-of-00004.idx", "manifest", "-00000-of-00001"])
def test_other_names_are_not_shards(name):
    assert layout.parse_shard_name(name) is None


def test_a_cache_part_is_done_when_its_summary_names_this_cache_and_file(tmp_path):
    prefix = layout.part_prefix(str(tmp_path), 0)
    assert layout.finished_part(prefix, "fp", "a.jsonl") is None
    summary = {"fingerprint": "fp", "file": "a.jsonl", "index": 0}
    with open(layout.part_summary(prefix), "w") as f:
        json.dump(summary, f)
    assert layout.finished_part(prefix, "fp", "a.jsonl") is None  # no tokens yet
    for ext in (".bin", ".idx"):
        open(prefix + ext, "wb").close()
    assert layout.finished_part(prefix, "fp", "a.jsonl") == summary
    assert layout.finished_part(prefix, "other", "a.jsonl") is None  # another cache's
    assert layout.finished_part(prefix, "fp", "b.jsonl") is None  # another file's


def test_part_names_parse_back(tmp_path):
    for name in ("part-00000.json", "part-00012.json", "part-00003.bin.tmp-abc123", "part-00004.bin", "cache.json",
                 "part-00005.docs.parquet", "part-7.json"):
        (tmp_path / name).write_bytes(b"{}")
    assert layout.part_summaries(str(tmp_path)) == {0: str(tmp_path / "part-00000.json"),
                                                    12: str(tmp_path / "part-00012.json")}
    assert layout.parts_in_progress(str(tmp_path)) == [(3, str(tmp_path / "part-00003.bin.tmp-abc123"))]
    assert layout.parts_in_progress("s3://b/c") == []  # local files only: their sizes are polled


def fake_shard(out, name, plan_hash):
    """What the pack stage leaves for a finished shard: .bin, .idx, provenance, then its record."""
    os.makedirs(os.path.join(out, layout.SHARDS_DIR), exist_ok=True)
    os.makedirs(os.path.join(out, layout.PROVENANCE_DIR), exist_ok=True)
    for path in [*layout.shard_files(out, name), layout.provenance_path(out, name)]:
        open(path, "wb").close()
    record = {"name": name, "plan_hash": plan_hash, "provenance": {"file": layout.provenance_rel(name)}}
    with open(layout.sidecar_path(out, name), "w") as f:
        json.dump(record, f)
    return record


def test_a_shard_is_done_for_its_plan_with_all_its_files(tmp_path):
    out = str(tmp_path)
    assert layout.finished_shard(out, "m-00000-of-00001", "h") is None
    record = fake_shard(out, "m-00000-of-00001", "h")
    assert layout.finished_shard(out, "m-00000-of-00001", "h") == record
    assert layout.finished_shard(out, "m-00000-of-00001", "other") is None
    assert layout.finished_shard(out, "m-00000-of-00001", None) == record  # any plan
    for missing in [*layout.shard_files(out, "m-00000-of-00001"), layout.provenance_path(out, "m-00000-of-00001")]:
        fake_shard(out, "m-00000-of-00001", "h")
        os.remove(missing)
        assert layout.finished_shard(out, "m-00000-of-00001", "h") is None, missing


def test_written_shards_are_every_promised_record_or_an_error_naming_the_missing_one(tmp_path):
    out = str(tmp_path)
    records = [fake_shard(out, n, "h") for n in layout.shard_names("m", 3)]
    assert layout.written_shards(out, "m", 3, "h") == records
    fake_shard(out, "m-00001-of-00003", "stale")
    with pytest.raises(OutputError, match="m-00001-of-00003.bin: the pack stage finished without writing this shard"):
        layout.written_shards(out, "m", 3, "h")
    os.remove(layout.sidecar_path(out, "m-00002-of-00003"))
    with pytest.raises(OutputError) as e:
        layout.written_shards(out, "m", 3, "stale")
    assert e.value.path == os.path.join(out, "m-00000-of-00003.bin")


def test_preparing_the_output_removes_what_the_new_manifest_will_not_list(tmp_path):
    """A crashed run with 3 shards left shards, records, provenance, routed references and its plan
    note; the next run asks for 2: only the 2 shards it may reuse stay."""
    out = str(tmp_path / "out")
    for name in layout.shard_names("m", 3) + layout.shard_names("m", 2):
        fake_shard(out, name, "h")
    os.makedirs(layout.refs_dir(out))
    for part in range(4):
        open(layout.refs_path(out, 0, part), "wb").close()
    for path in (layout.manifest_path(out), layout.plan_path(out)):
        open(path, "w").close()
    fake_shard(out, "other-00000-of-00001", "h")  # another mixture's: its files stay, its record goes
    layout.prepare_output(out, "m", 2)
    assert sorted(os.listdir(out)) == sorted(["_shards", "_provenance", "other-00000-of-00001.bin",
                                              "other-00000-of-00001.idx", "m-00000-of-00002.bin",
                                              "m-00000-of-00002.idx", "m-00001-of-00002.bin", "m-00001-of-00002.idx"])
    assert sorted(os.listdir(os.path.join(out, layout.SHARDS_DIR))) == ["m-00000-of-00002.json",
                                                                         "m-00001-of-00002.json"]
    assert sorted(os.listdir(os.path.join(out, layout.PROVENANCE_DIR))) == ["m-00000-of-00002.refs.npy",
                                                                             "m-00001-of-00002.refs.npy"]
    assert layout.written_shards(out, "m", 2, "h")  # what may be reused stays
    layout.prepare_output(str(tmp_path / "new"), "m", 2)  # a folder not there yet is made
    assert os.listdir(tmp_path / "new") == []


def test_preparing_splits_readies_those_asked_and_empties_those_not(tmp_path):
    out = str(tmp_path)
    for split in layout.SPLIT_FOLDERS:
        folder = layout.split_dir(out, split)
        fake_shard(folder, layout.shard_name(layout.split_mixture("m", split), 0, 2), "h")
        open(layout.manifest_path(folder), "w").close()
    layout.prepare_splits(out, "m", {"valid": 1})
    assert sorted(os.listdir(layout.split_dir(out, "valid"))) == ["_provenance", "_shards"]  # 2 shards -> 1
    assert sorted(os.listdir(layout.split_dir(out, "test"))) == ["_provenance", "_shards"]  # not asked: no shards
    layout.prepare_splits(str(tmp_path / "none"), "m", {})  # no split folders: nothing made
    assert not os.path.exists(tmp_path / "none")


def test_layout_imports_nothing_heavy():
    """dataset.py (numpy only) and megatron_check.py (a trainer's environment) import it."""
    code = ("import sys; import pipeline.layout; "
            "print(sorted(m for m in ('apache_beam', 'pyarrow', 'tokenizers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_writes_exactly_the_names_layout_gives(runs):
    m = runs["stage1"]
    out = str(runs["root"] / "stage1")
    shards = layout.shard_names(m["name"], len(m["shards"]))
    assert [s["prefix"] for s in m["shards"]] == shards
    expected = {layout.MANIFEST, layout.TOKENIZER_FILE, layout.NEOX_FILE, layout.ARGS_FILE, layout.ARGS_JSON,
                layout.REPORT_FILE, layout.REPORT_DIR, layout.SHARDS_DIR, layout.PROVENANCE_DIR}
    expected |= {layout.DEDUP_FILE} if m["config"].get("dedup") else set()  # stage 1 removes exact duplicates
    expected |= {os.path.basename(p) for s in shards for p in layout.shard_files(out, s)}
    assert set(os.listdir(out)) == expected  # no _refs, no _plan.json, no _near-pairs.json, no temporaries left
    assert [r["name"] for r in layout.written_shards(out, m["name"], len(shards), m["plan_hash"])] == shards
    for name, s in m["sources"].items():
        directory = layout.cache_dir(runs["cache"], name, s["cache_fingerprint"])
        assert layout.is_finished_cache(directory)
        cache = json.load(open(layout.cache_manifest(directory)))
        assert [p["part"] for p in cache["parts"]] == [layout.part_name(i) for i in range(len(cache["parts"]))]
        assert sorted(layout.part_summaries(directory)) == list(range(len(cache["parts"])))
        for i, p in enumerate(cache["parts"]):
            assert layout.finished_part(layout.part_prefix(directory, i), cache["fingerprint"], p["file"])
