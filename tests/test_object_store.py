"""A stage-1 dry run from s3:// to s3://, against a real S3-compatible server on loopback (moto),
through Beam's own S3 filesystem: the shards must be byte-identical to a local run's."""

import os
import time

import boto3
from conftest import ROOT, SAMPLES, TOKENIZER, local_digest, s3_digest

from pipeline.config import load_mixture
from pipeline.mixture import run_mixture
from pipeline.outputs.verify import verify_path

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")


def cfg():
    return load_mixture(STAGE1, {"tokenizer": TOKENIZER, "total_tokens": 200_000, "shards": 2})


def test_s3_to_s3_dry_run_matches_the_local_run(s3_server, tmp_path):
    data = s3_server(SAMPLES, "mixprep-data", "samples")
    options = IN_PROCESS + s3_server.options
    s3_server.bucket("mixprep-out")
    remote = run_mixture(cfg(), data, "s3://mixprep-out/stage1", "s3://mixprep-out/cache", options)
    local = run_mixture(cfg(), SAMPLES, str(tmp_path / "stage1"), str(tmp_path / "cache"), IN_PROCESS)
    assert remote == local
    assert s3_digest(s3_server.endpoint, "mixprep-out", "stage1") == local_digest(tmp_path / "stage1")
    # verify reads the shards back from the store
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(s3_server.options))
    assert verify_path("s3://mixprep-out/stage1")[-1].endswith("ok")
    # the report is written beside the mixture, and inspect reads provenance back from the store
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server.endpoint)
            .list_objects_v2(Bucket="mixprep-out", Prefix="stage1/")["Contents"]]
    assert "stage1/report.md" in keys and "stage1/report/shares.png" in keys
    from pipeline.inspect import inspect_sample

    shown = inspect_sample("s3://mixprep-out/stage1", 0, "s3://mixprep-out/cache", TOKENIZER)
    assert "sample 0 of" in shown and "<|endoftext|>" in shown
    # a second run reuses the caches and the shards on the store
    again = run_mixture(cfg(), data, "s3://mixprep-out/stage1", "s3://mixprep-out/cache", options)
    assert again == local


def test_cache_folders_on_the_store_are_listed_and_removed(s3_server, tmp_path):
    """What finding and removing sampled caches does on a store: list ``<source>/*/cache.json``, delete
    a folder's objects (cache.json first)."""
    from pipeline import storage

    for folder in ("a", "b"):
        os.makedirs(tmp_path / "pile" / folder / "sub")
        for name in ("cache.json", "part-00000.bin", "sub/x"):
            (tmp_path / "pile" / folder / name).write_text(folder)
    root = s3_server(str(tmp_path), "mixprep-caches", "cache")
    assert storage.list_files(root + "/pile", "*/cache.json") == [f"{root}/pile/{f}/cache.json" for f in ("a", "b")]
    assert storage.list_files(root + "/c4", "*/cache.json") == []  # a source with no cache yet
    storage.delete_tree(root + "/pile/a", first="cache.json")
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server.endpoint)
            .list_objects_v2(Bucket="mixprep-caches", Prefix="cache/")["Contents"]]
    assert sorted(keys) == [f"cache/pile/b/{n}" for n in ("cache.json", "part-00000.bin", "sub/x")]


def test_read_marks_on_the_store(s3_server, tmp_path):
    """A run's read mark on a cache folder in a store: written, seen by other runs only, removed."""
    from pipeline import storage
    from pipeline.cache import RUN_ID, Readers, other_readers

    os.makedirs(tmp_path / "pile" / "a")
    (tmp_path / "pile" / "a" / "cache.json").write_text("{}")
    root = s3_server(str(tmp_path), "mixprep-marks", "cache")
    folder = root + "/pile/a"
    with Readers() as readers:
        readers.mark(folder)
        assert storage.list_files(folder + "/readers", "*.json") == [f"{folder}/readers/{RUN_ID}.json"]
        assert other_readers(folder) == []  # this run's own
        storage.write_json(folder + "/readers/elsewhere.json", {"run": "elsewhere", "since": time.time()})
        assert other_readers(folder) == ["elsewhere"]
    assert storage.list_files(folder + "/readers", "*.json") == [f"{folder}/readers/elsewhere.json"]
