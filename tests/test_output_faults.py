"""Output faults: an output that cannot be created, a disk that fills mid-run. A clear error,
nothing corrupt under a final name, and the next run recovers."""

import errno
import hashlib
import os

import pytest
from conftest import ROOT, SAMPLES, TOKENIZER

import pipeline.mmidx as mmidx
from pipeline.config import load_mixture
from pipeline.errors import OutputError
from pipeline.mixture import run_mixture
from pipeline.mmidx import MMIDXReader
from pipeline.outputs.verify import verify_path

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")


def cfg():
    return load_mixture(STAGE1, {"tokenizer": TOKENIZER, "total_tokens": 400_000, "shards": 3})


def digest(folder):
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder)) if n.endswith((".bin", ".idx")) or n == "manifest.json"}


class _FullDisk:
    """A file that accepts ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room):
        self._f, self._room = f, room

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        if n > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_an_output_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as e:
        run_mixture(cfg(), SAMPLES, str(blocker / "out"), str(tmp_path / "cache"), IN_PROCESS)
    assert str(blocker / "out") in str(e.value) and "rerun" in str(e.value)


def test_a_disk_that_fills_while_writing_shards(tmp_path, monkeypatch):
    out, cache = tmp_path / "out", tmp_path / "cache"
    real_open = mmidx._open

    def filling(path, mode):
        f = real_open(path, mode)
        return _FullDisk(f, 50_000) if "stage1-00001" in os.path.basename(path) else f

    monkeypatch.setattr(mmidx, "_open", filling)
    with pytest.raises(Exception) as e:
        run_mixture(cfg(), SAMPLES, str(out), str(cache), IN_PROCESS)
    msg = str(e.value)
    assert "No space left on device" in msg and "stage1-00001-of-00003" in msg
    assert not (out / "manifest.json").exists()
    assert not [n for n in os.listdir(out) if n.startswith("stage1-00001")]  # no partial shard, no temp file
    for n in os.listdir(out):
        if n.endswith(".idx"):
            MMIDXReader(str(out / n[:-4])).close()  # whatever is under a final name is whole

    monkeypatch.setattr(mmidx, "_open", real_open)  # space is back: rerun the same command
    run_mixture(cfg(), SAMPLES, str(out), str(cache), IN_PROCESS)
    reference = tmp_path / "reference"
    run_mixture(cfg(), SAMPLES, str(reference), str(cache), IN_PROCESS)
    assert digest(out) == digest(reference)
    assert verify_path(str(out))[-1].endswith("ok")
