"""Kill a real `mixprep run` with SIGKILL at several points, rerun it: same bytes, nothing partial."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES

from pipeline.crashpoints import ENV
from pipeline.mmidx import MMIDXReader
from pipeline.outputs.verify import verify_path

STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")


def mixprep_run(out, cache, crash_at=None):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at:
        env[ENV] = crash_at
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--mixture", STAGE1, "--data-root", SAMPLES,
           "--tokenizer", "small", "--out", str(out), "--cache", str(cache), "--total-tokens", "400000",
           "--shards", "3", "--direct_running_mode=in_memory"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def digest(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name.endswith((".bin", ".idx", ".parquet")) or name in ("manifest.json", "cache.json"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def assert_nothing_partial(*folders):
    """Every file under a final name is whole: pairs open and validate, JSON parses."""
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                if ".tmp-" in name:
                    continue  # temporary names are allowed to be partial; a rerun removes them
                if name.endswith(".json"):
                    with open(path) as f:
                        json.load(f)
                if name.endswith(".idx"):  # the .idx is renamed last: its .bin must be complete
                    with MMIDXReader(path[:-4]) as r:
                        assert len(r) >= 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    proc = mixprep_run(root / "out", root / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.mark.parametrize("crash_at", [
    "cache-part:refinedweb:1",  # while tokenizing: two of refinedweb's three parts are done
    "mmidx-rename:stage1-00001-of-00003",  # while writing shards: a .bin is in place, its .idx not
    "before-manifest:stage1",  # everything but the manifest
])
def test_kill_and_rerun_gives_the_same_bytes(reference, tmp_path, crash_at):
    out, cache = tmp_path / "out", tmp_path / "cache"
    killed = mixprep_run(out, cache, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "manifest.json").exists()
    assert_nothing_partial(out, cache)
    kept = {p: os.stat(os.path.join(cache, p)).st_mtime_ns for p in digest(cache) if p.endswith(".bin")}
    sidecars = out / "_shards"
    finished = [n[:-5] for n in os.listdir(sidecars)] if sidecars.exists() else []
    shards_kept = {n: os.stat(out / f"{n}.bin").st_mtime_ns for n in finished}

    rerun = mixprep_run(out, cache)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert digest(out) == digest(reference / "out")
    assert digest(cache) == digest(reference / "cache")
    assert verify_path(str(out))[-1].endswith("ok")
    assert not [n for _, _, files in os.walk(out) for n in files if ".tmp-" in n]
    assert not (out / "_plan.json").exists()  # the killed run's plan note (layout.PLAN_FILE)
    # Finished cache parts and shards were reused, not redone.
    for p, mtime in kept.items():
        assert os.stat(os.path.join(cache, p)).st_mtime_ns == mtime, p
    for n, mtime in shards_kept.items():
        assert os.stat(out / f"{n}.bin").st_mtime_ns == mtime, n
    if crash_at.startswith("before-manifest"):
        assert len(shards_kept) == 3
