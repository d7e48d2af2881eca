"""`layout: documents`: one entry per selected copy, in the stream order `samples` cuts; deterministic.

Checked with our own reader, so it runs without torch (tests/outputs/test_megatron.py has Megatron read it).
"""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLES, TOKENIZER

from pipeline.config import load_mixture
from pipeline.mixture import run_mixture
from pipeline.mmidx import MMIDXReader

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")
SIZE = {"shards": 3, "total_tokens": 300_000, "seq_len": 128}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    out = {"root": root, "cache": str(root / "cache")}
    for layout in ("documents", "samples"):
        cfg = load_mixture(STAGE1, {"tokenizer": TOKENIZER, **SIZE, "layout": layout})
        out[layout] = run_mixture(cfg, SAMPLES, str(root / layout), out["cache"], IN_PROCESS)
    return out


def test_one_entry_per_copy_ending_with_its_only_eos(runs):
    m = runs["documents"]
    eos = m["tokenizer"]["eos_id"]
    for shard in m["shards"]:
        refs = np.load(runs["root"] / "documents" / "_provenance" / (shard["prefix"] + ".refs.npy"))
        with MMIDXReader(str(runs["root"] / "documents" / shard["prefix"])) as r:
            assert np.array_equal(r.sequence_lengths, refs["n"])  # entry i is copy i of the provenance
            assert r.num_documents == len(r)
            for i in range(len(r)):
                assert np.flatnonzero(r[i] == eos).tolist() == [len(r[i]) - 1]


def test_documents_are_the_stream_samples_cut(runs):
    """Concatenated, a documents shard is its samples twin plus the tail that layout drops."""
    for doc_shard, sample_shard in zip(runs["documents"]["shards"], runs["samples"]["shards"]):
        docs = np.fromfile(runs["root"] / "documents" / (doc_shard["prefix"] + ".bin"), dtype=np.uint16)
        cut = np.fromfile(runs["root"] / "samples" / (sample_shard["prefix"] + ".bin"), dtype=np.uint16)
        assert len(docs) == len(cut) + sample_shard["tail_tokens"] and np.array_equal(docs[: len(cut)], cut)


def digest(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if name.endswith((".bin", ".idx")) or name == "manifest.json"}


def test_two_worker_processes_give_the_same_bytes(runs, tmp_path):
    """The CLI with 2 worker processes writes what the in-process run wrote (manifest included)."""
    os.symlink(os.path.join(ROOT, "tokenizer"), tmp_path / "tokenizer")  # the file's ../tokenizer/tokenizer.json
    (tmp_path / "mixtures").mkdir()
    mixture = tmp_path / "mixtures" / "stage1.yaml"  # the CLI takes no --seq-len or --layout: set them here
    text = open(STAGE1).read().replace("seq_len: 2048", f"seq_len: {SIZE['seq_len']}")
    mixture.write_text(text + "layout: documents\n")
    out = tmp_path / "mp"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--mixture", str(mixture), "--data-root", SAMPLES,
           "--tokenizer", TOKENIZER,
           "--out", str(out), "--cache", str(tmp_path / "cache"), "--total-tokens", "300000", "--shards", "3",
           "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digest(out) == digest(runs["root"] / "documents")


def test_readers_of_samples_refuse_a_documents_mixture_by_name(runs, tmp_path):
    from pipeline.dataset import MixtureDataset
    from pipeline.errors import FormatError
    from pipeline.inspect import inspect_sample

    folder = runs["root"] / "documents"
    with pytest.raises(FormatError, match="layout: documents"):
        MixtureDataset(folder)
    with pytest.raises(FormatError, match="layout: documents"):
        inspect_sample(str(folder), 0, runs["cache"])
