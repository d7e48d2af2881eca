"""Megatron-LM reads `layout: documents` as whole documents at the manifest's shares.

megatron-core's own BlendedMegatronDatasetBuilder + GPTDataset, built from the run's emitted
`megatron-args.json`, over one epoch (pipeline/megatron_check.py). The control: today's
`layout: samples` fails the same check, which is why `documents` exists.
"""

import json
import os
import warnings

import pytest

torch = pytest.importorskip("torch", reason="the Megatron check needs torch (the `trainers` extra)")
pytest.importorskip("megatron.core", reason="the Megatron check needs megatron-core (the `trainers` extra)")
try:  # shipped compiled in megatron-core's wheels; an sdist install has no Makefile to build it with
    import megatron.core.datasets.helpers_cpp  # noqa: F401
except ImportError as e:
    pytest.skip(f"megatron-core's C++ dataset helpers are not built for this Python: {e}", allow_module_level=True)

from conftest import ROOT, SAMPLES, TOKENIZER  # noqa: E402

from pipeline.config import load_mixture  # noqa: E402
from pipeline.layout import ARGS_FILE  # noqa: E402
from pipeline.mixture import run_mixture  # noqa: E402
from pipeline.outputs.megatron import read_megatron_args  # noqa: E402
from pipeline.outputs.megatron_check import check_epoch  # noqa: E402
from pipeline.outputs.verify import verify_path  # noqa: E402

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")
SEQ_LEN = 128  # short windows: thousands of Megatron samples from 300k tokens


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 at 300k tokens in both layouts, sharing one token cache; each checked by Megatron."""
    root = tmp_path_factory.mktemp("megatron")
    cache = str(root / "cache")
    out = {}
    for layout in ("documents", "samples"):
        cfg = load_mixture(STAGE1, {"tokenizer": TOKENIZER, "shards": 3, "total_tokens": 300_000, "seq_len": SEQ_LEN,
                                    "layout": layout})
        folder = str(root / layout)
        manifest = run_mixture(cfg, SAMPLES, folder, cache, IN_PROCESS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # megatron-core's "no Transformer Engine / Apex" on import
            check = check_epoch(folder, cache_root=cache, index_cache=str(root / f"index-{layout}"))
        out[layout] = {"folder": folder, "manifest": manifest, "check": check}
    return out


def test_every_megatron_sample_is_whole_documents_separated_by_eos(runs):
    check = runs["documents"]["check"]
    m = runs["documents"]["manifest"]
    epoch = sum((s["tokens"] - 1) // SEQ_LEN for s in m["shards"])  # each shard's whole windows
    assert epoch > 2000 and epoch <= check.samples <= epoch + len(m["shards"])  # the blend rounds up per shard
    assert check.joined == 0, check.example
    assert check.boundaries > 100 and check.whole_documents > 0  # EOS joins seen, short documents inside


def test_each_source_share_of_megatron_tokens_is_the_manifest(runs):
    check, m = runs["documents"]["check"], runs["documents"]["manifest"]
    shares = check.shares()
    print("\nMegatron epoch vs manifest:", {n: (round(100 * shares[n], 3), round(100 * s["written_share"], 3))
                                            for n, s in m["sources"].items()})
    for name, s in m["sources"].items():
        assert abs(shares[name] - s["written_share"]) < 0.001, name


def test_samples_layout_is_the_control_megatron_joins_documents(runs):
    """Megatron shuffles our samples and cuts its own windows across them: nearly every window joins
    pieces of two documents with no EOS between."""
    check = runs["samples"]["check"]
    assert check.samples > 2000 and check.joined > 0.9 * check.samples


def test_documents_layout_shards(runs):
    """One entry per selected copy (EOS last), nothing dropped; verify passes; GPT-NeoX packs them."""
    r = runs["documents"]
    m = r["manifest"]
    assert m["layout"] == "documents" and m["totals"]["tail_tokens"] == 0
    assert m["totals"]["written_tokens"] == m["totals"]["selected_tokens"] == sum(s["tokens"] for s in m["shards"])
    assert m["totals"]["samples"] == sum(s["copies"] for s in m["sources"].values())
    assert verify_path(r["folder"])[-1].endswith("ok")
    neox = json.load(open(os.path.join(r["folder"], "gpt-neox-data.json")))
    assert neox["pack-impl"] == "packed" and neox["train-data-weights"] == [s["tokens"] for s in m["shards"]]


@pytest.mark.parametrize("layout", ["documents", "samples"])
def test_megatron_arguments(runs, layout):
    r = runs[layout]
    emitted = read_megatron_args(r["folder"])
    args, m = emitted["args"], r["manifest"]
    blend = args[args.index("--data-path") + 1: args.index("--split")]
    assert blend[0::2] == [str(s["tokens"]) for s in m["shards"]]
    assert blend[1::2] == [os.path.join(r["folder"], s["prefix"]) for s in m["shards"]]
    assert args[args.index("--seq-length") + 1] == str(SEQ_LEN) and args[args.index("--split") + 1] == "100,0,0"
    assert "--tokenizer-model" in args and "--data-cache-path" in args
    text = open(os.path.join(r["folder"], ARGS_FILE)).read()
    assert ("WARNING: layout samples" in text) == (layout == "samples")
