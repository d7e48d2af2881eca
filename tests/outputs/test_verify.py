"""`mixprep verify`: a real run's mixture and caches pass; each kind of damage is named by its file."""

import os
import re
import shutil

import pytest

from pipeline import layout
from pipeline.errors import FormatError
from pipeline.outputs.verify import verify_path
from pipeline.storage import read_json, write_json


@pytest.fixture
def stage1(runs, tmp_path):
    """A private copy of the stage 1 dry run's mixture folder, to damage."""
    copy = tmp_path / "stage1"
    shutil.copytree(runs["root"] / "stage1", copy)
    return copy


def test_a_real_mixture_passes_shard_by_shard(runs):
    for stage in ("stage1", "stage2"):
        folder, m = str(runs["root"] / stage), runs[stage]
        lines = verify_path(folder)
        assert lines[:-1] == [f"{layout.shard_prefix(folder, s['prefix'])}: {s['sequences']:,} samples: ok"
                              for s in m["shards"]]
        assert lines[-1] == (f"{folder}: {m['totals']['samples']:,} samples, {m['totals']['written_tokens']:,} "
                             f"tokens in {len(m['shards'])} shards: ok")


def test_real_caches_pass_one_by_one_or_as_a_folder(runs):
    m = runs["stage1"]
    directories = [layout.cache_dir(runs["cache"], n, s["cache_fingerprint"]) for n, s in m["sources"].items()]
    for d in directories:
        (line,) = verify_path(d)
        assert line.startswith(f"{d}: ") and line.endswith(" parts: ok")
    every = verify_path(runs["cache"])  # the cache root: every cache under it
    assert len(every) >= len(directories) and all(line.endswith(" parts: ok") for line in every)


def test_a_bare_shard_prefix_passes(runs):
    m = runs["stage1"]
    prefix = layout.shard_prefix(str(runs["root"] / "stage1"), m["shards"][0]["prefix"])
    assert verify_path(prefix) == [f"{prefix}: {m['shards'][0]['sequences']:,} sequences, "
                                   f"{m['shards'][0]['tokens']:,} tokens: ok"]


def _shard(folder, k=1):
    return layout.shard_files(str(folder), read_json(layout.manifest_path(str(folder)))["shards"][k]["prefix"])


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 2)  # one uint16 token short


def _flip(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("damage, which", [(_truncate, 0), (_flip, 0), (_flip, 1)],
                         ids=["truncated .bin", "flipped byte in .bin", "flipped byte in .idx"])
def test_a_damaged_shard_is_named(stage1, damage, which):
    path = _shard(stage1)[which]
    damage(path)
    with pytest.raises(FormatError, match=rf"^{re.escape(path)}: sha256 [0-9a-f]{{64}} does not match the recorded"):
        verify_path(str(stage1))


@pytest.mark.parametrize("which", [0, 1], ids=[".bin", ".idx"])
def test_a_missing_shard_file_is_named(stage1, which):
    path = _shard(stage1)[which]
    os.remove(path)
    with pytest.raises(FormatError, match=rf"^{re.escape(path)}: missing, though recorded with sha256"):
        verify_path(str(stage1))


def test_totals_that_disagree_with_the_shards_are_named(stage1):
    path = layout.manifest_path(str(stage1))
    manifest = read_json(path)
    manifest["totals"]["samples"] += 1
    write_json(path, manifest)
    with pytest.raises(FormatError, match=rf"^{re.escape(path)}: totals say"):
        verify_path(str(stage1))


def test_a_damaged_cache_part_is_named(runs, tmp_path):
    name, s = next(iter(runs["stage1"]["sources"].items()))
    copy = tmp_path / "cache"
    shutil.copytree(layout.cache_dir(runs["cache"], name, s["cache_fingerprint"]), copy)
    path = layout.part_prefix(str(copy), 0) + ".bin"
    _flip(path)
    with pytest.raises(FormatError, match=rf"^{re.escape(path)}: sha256"):
        verify_path(str(copy))


def test_nothing_to_verify_says_what_it_expected(tmp_path):
    with pytest.raises(FormatError, match="nothing to verify: expected a mixture folder \\(manifest.json\\), a token "
                                          "cache \\(cache.json\\)"):
        verify_path(str(tmp_path))
