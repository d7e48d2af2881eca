"""pipeline.tokenizer.load: the shipped tokenizer, loading a tokenizer.json, dtype, EOS, what pickles."""

import json
import pickle
import shutil

import numpy as np
import pytest
from tokenizer_helpers import (
    SHIPPED,
    neox_like,
    shipped,
    write_config,
)

from pipeline.errors import ConfigError, MixprepError
from pipeline.tokenizer import (
    Encoder,
    TokenizerInfo,
    chunking_blocker,
    load_tokenizer,
)


def test_special_token_ids():
    tok = shipped()
    assert tok.tokenizer.token_to_id("<|endoftext|>") == 0
    assert tok.tokenizer.token_to_id("<|padding|>") == 1
    assert tok.eos_id == 0
    assert tok.info() == {
        "name": str(SHIPPED), "sha256": tok.sha256, "vocab_size": tok.vocab_size, "eos_id": 0,
        "eos_token": "<|endoftext|>", "dtype": "uint16",
    }


def test_shipped_tokenizer_is_cut_safe_and_so_is_gpt_neox_structure():
    assert chunking_blocker(json.loads(shipped().tokenizer.to_str())) is None
    assert chunking_blocker(json.loads(neox_like().tokenizer.to_str())) is None


def test_big_vocabulary_is_stored_as_int32(tmp_path):
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    vocab = config["model"]["vocab"]
    first = max(vocab.values()) + 1
    vocab.update({f"<unused{i}>": first + i for i in range(66000 - first)})
    tok = load_tokenizer(write_config(tmp_path, config))
    assert tok.vocab_size == 66000 and tok.dtype == np.int32
    [ids] = Encoder(tok).encode_batch(["big vocabulary"])
    assert ids.dtype == np.int32 and ids[-1] == 0


def test_local_directory_and_sha256(tmp_path):
    shutil.copy(SHIPPED, tmp_path / "tokenizer.json")
    tok = load_tokenizer(str(tmp_path))
    assert tok.sha256 == shipped().sha256 and tok.name == str(tmp_path)


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_tokenizer(str(missing))
    assert str(missing) in str(err.value)


def test_directory_without_tokenizer_json(tmp_path):
    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_hub_id_offline_gives_one_clear_paragraph(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(MixprepError) as err:
        load_tokenizer("EleutherAI/gpt-neox-20b")
    message = str(err.value)
    assert "EleutherAI/gpt-neox-20b" in message
    assert "cannot be reached from this machine" in message
    assert "tokenizer.json" in message and "pass its path" in message
    assert "\n" not in message


def test_missing_eos_is_an_error_unless_named(tmp_path):
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    config["added_tokens"][0]["content"] = "</s>"
    vocab = config["model"]["vocab"]
    vocab["</s>"] = vocab.pop("<|endoftext|>")
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError, match="no token '<\\|endoftext\\|>'"):
        load_tokenizer(path)
    tok = load_tokenizer(path, eos_token="</s>")
    assert tok.eos_id == 0 and tok.eos_token == "</s>"
    with pytest.raises(ConfigError, match="no token '<eos>'"):
        load_tokenizer(path, eos_token="<eos>")


def test_not_a_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"vocab": {}}')
    with pytest.raises(ConfigError, match="not a valid Hugging Face tokenizer.json"):
        load_tokenizer(str(path))


def test_pickles_as_json_without_the_rust_object():
    tok = shipped()
    tok.tokenizer  # load the cached Tokenizer first
    copy = pickle.loads(pickle.dumps(tok))
    assert "tokenizer" not in copy.__dict__
    assert copy.info() == tok.info() and copy.json_bytes == tok.json_bytes
    assert copy.tokenizer.encode("same ids").ids == tok.tokenizer.encode("same ids").ids


def test_about_is_the_same_facts_without_the_json():
    tok = shipped()
    about = tok.about()
    assert type(about) is TokenizerInfo and about.info() == tok.info()
    assert not hasattr(about, "json_bytes") and len(pickle.dumps(about)) < 1000 < len(tok.json_bytes)
