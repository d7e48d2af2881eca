"""pipeline/bundled.py: the files mixprep ships with, and what a run says about its tokenizer."""

import hashlib
import os

from conftest import ROOT, STAGE1, TOKENIZER

from pipeline.bundled import bundled, mixture_path, small_tokenizer_path, tokenizer_warnings
from pipeline.config import load_mixture

NEOX = "EleutherAI/gpt-neox-20b"


def test_bundled_files_are_found_in_the_checkout():
    assert bundled("mixtures") == os.path.join(ROOT, "mixtures")
    assert mixture_path("stage2") == os.path.join(ROOT, "mixtures", "stage2.yaml")
    assert small_tokenizer_path() == TOKENIZER


def test_the_mixtures_name_the_production_tokenizer_and_small_names_the_test_one():
    assert load_mixture(STAGE1).tokenizer == NEOX
    cfg = load_mixture(STAGE1, {"tokenizer": "small"})
    assert cfg.tokenizer_path == TOKENIZER and cfg.named_tokenizer == NEOX
    # The config says `small`, not a path of this machine: the same config hash on every checkout.
    assert cfg.to_dict()["tokenizer"] == "small" and "named_tokenizer" not in cfg.to_dict()


def test_a_run_says_when_its_tokenizer_is_not_the_mixtures_or_is_the_test_one_on_a_big_run():
    small = hashlib.sha256(open(TOKENIZER, "rb").read()).hexdigest()
    assert tokenizer_warnings("", NEOX, "f" * 64, 10**12) == []
    assert tokenizer_warnings(NEOX, "small", small, 10**6) == [
        "tokenizing with small, not the tokenizer the mixture names (EleutherAI/gpt-neox-20b)"]
    (line,) = tokenizer_warnings("", "small", small, 10**12)
    assert line.startswith("the bundled test tokenizer") and "1,000,000,000,000-token" in line and "--tokenizer" in line


def test_the_manifest_records_both_and_the_warning(runs):
    tok = runs["stage1"]["tokenizer"]
    assert tok["named_by_mixture"] == NEOX and tok["name"] == TOKENIZER
    assert tok["warnings"] == [f"tokenizing with {TOKENIZER}, not the tokenizer the mixture names ({NEOX})"]
