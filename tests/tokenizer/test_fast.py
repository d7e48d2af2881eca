"""pipeline.tokenizer.fast (and the gate every fast backend passes): tiktoken and gigatoken give the ids
of `tokenizers` (varied texts, every sample document, properties over cut points, every code point)."""

import json
import logging
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import normalizers

from pipeline.errors import ConfigError
from pipeline.tokenizer import (
    Encoder,
    chunking_blocker,
    load_tokenizer,
)
from pipeline.tokenizer.fast import PROBE_TEXT, _fast_encoding, _fast_pattern, fast_encoder_blocker
from pipeline.tokenizer.structure import pipeline_blocker

tiktoken = pytest.importorskip("tiktoken")

from tokenizer_helpers import (  # noqa: E402
    FAST_BACKENDS,
    SHIPPED,
    VARIED,
    _check_fast_equals_tokenizers,
    _installed,
    _sample_texts,
    _with,
    cut_property,
    dense_text,
    documents,
    fast_encoder,
    hide_packages,  # noqa: F401 (a fixture)
    make_long_document,
    neox_like,
    shipped,
    whole_ids,
    write_config,
)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("which", ["shipped", "neox_like"])
def test_fast_encoder_is_used_and_matches_on_varied_texts(which, backend):
    _check_fast_equals_tokenizers(which, VARIED + [PROBE_TEXT, dense_text(5_000, seed=3)], backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("which", ["shipped", "neox_like"])
def test_fast_encoder_matches_on_every_sample_document(which, backend):
    _check_fast_equals_tokenizers(which, _sample_texts(), backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@cut_property
@given(texts=st.lists(documents, min_size=1, max_size=3))
def test_fast_encoder_property(backend, texts):
    _check_fast_equals_tokenizers("shipped", texts, backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@cut_property
@given(texts=st.lists(documents, min_size=1, max_size=3))
def test_fast_encoder_property_with_gpt_neox_structure(backend, texts):
    _check_fast_equals_tokenizers("neox_like", texts, backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40))
def test_fast_encoder_on_arbitrary_unicode(backend, text):
    _check_fast_equals_tokenizers("neox_like", [text], backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_unicode_tables_agree_for_every_code_point(backend):
    """The fast backend's regex classes (\\p{L}, \\p{N}, \\s) and Python's NFC (which both fast
    backends apply before encoding) agree with tokenizers' on every character.

    Each character sits in contexts where its class decides the split: after a letter, a digit, a
    space and punctuation; NFC is compared alone and after a base letter.
    """
    enc, tok = fast_encoder("neox_like", backend), neox_like()
    nfc = normalizers.NFC().normalize_str
    # Planes 0-3 and 14 hold every assigned character; planes 4-13 are unassigned, 15-16 private use.
    # Planes 2-3 (CJK ideograph extensions, one class throughout) are sampled, every third.
    planes = [*range(0, 0x20000), *range(0x20000, 0x40000, 3), *range(0xE0000, 0xF0000)]
    planes += [p + i for p in range(0x40000, 0x110000, 0x10000) for i in range(0, 0x10000, 61)]
    chars = [chr(cp) for cp in planes if not 0xD800 <= cp < 0xE000]
    for start in range(0, len(chars), 1 << 14):
        block = chars[start:start + (1 << 14)]
        assert [unicodedata.normalize("NFC", "a" + c) for c in block] == [nfc("a" + c) for c in block]
        texts = ["".join(f"x{c}x 1{c}1  {c}.\na{c} " for c in block[i:i + 256]) for i in range(0, len(block), 256)]
        got = [a.tolist() for a in enc.encode_batch(texts)]
        want = [e.ids + [0] for e in tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        assert got == want, f"code points from {ord(block[0]):#x}"


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_long_document_with_the_fast_encoder(backend):
    tok = shipped()
    text = make_long_document(600_000, seed=5)
    enc = Encoder(tok, backend=backend)
    assert enc.backend == backend and len(enc.pieces(text)) > 5
    assert enc.encode_batch([text])[0].tolist() == whole_ids(tok, text)


def test_fast_pattern_treats_space_runs_as_added_tokens():
    assert _fast_pattern(0) == GPT2
    pattern = _fast_pattern(24)
    assert pattern.endswith("| {2,24}") and r"\s+" not in pattern


GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def test_fast_encoder_falls_back_without_tiktoken_and_gigatoken(hide_packages, caplog):  # noqa: F811 (the fixture)
    hide_packages("tiktoken", "gigatoken")
    with caplog.at_level(logging.WARNING, logger="pipeline.tokenizer"):
        enc = Encoder(shipped())
    assert enc.backend == "tokenizers" and "tiktoken is not installed" in enc.fast_blocker
    assert "gigatoken is not installed" in caplog.text and "tiktoken is not installed" in caplog.text
    assert enc.backend_info()["refused"].keys() == {"gigatoken", "tiktoken"}
    assert enc.encode_batch(["It's fine"])[0].tolist() == whole_ids(shipped(), "It's fine")


def test_fast_encoder_can_be_turned_off_or_forced(monkeypatch):
    monkeypatch.setenv("MIXPREP_ENCODER", "tokenizers")
    assert Encoder(shipped()).backend == "tokenizers"
    assert Encoder(shipped()).fast_blocker == "not requested (MIXPREP_ENCODER=tokenizers)"
    monkeypatch.setenv("MIXPREP_ENCODER", "tiktoken")
    assert Encoder(shipped()).backend == "tiktoken"
    assert Encoder(shipped(), backend="tokenizers").backend == "tokenizers"  # the argument wins
    monkeypatch.setenv("MIXPREP_ENCODER", "sentencepiece")
    with pytest.raises(ConfigError, match="MIXPREP_ENCODER='sentencepiece' is not an encoder backend"):
        Encoder(shipped())
    monkeypatch.delenv("MIXPREP_ENCODER")
    assert Encoder(shipped(), fast=False).backend == "tokenizers"
    assert Encoder(shipped()).backend == ("gigatoken" if _installed("gigatoken") else "tiktoken")


def test_a_forced_backend_its_gate_refuses_gives_tokenizers(hide_packages, caplog):  # noqa: F811 (the fixture)
    hide_packages("gigatoken")
    with caplog.at_level(logging.WARNING, logger="pipeline.tokenizer"):
        enc = Encoder(shipped(), backend="gigatoken")
    assert enc.backend == "tokenizers" and enc.refused == {"gigatoken": enc.refused["gigatoken"]}  # tiktoken not tried
    assert "gigatoken is not installed" in caplog.text and "trying `tokenizers`" in caplog.text


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_threads_give_the_same_ids(monkeypatch, backend):
    texts = VARIED * 3
    one = Encoder(shipped(), threads=1, max_call_bytes=1 << 10, backend=backend)
    monkeypatch.setenv("MIXPREP_ENCODE_THREADS", "3")
    three = Encoder(shipped(), max_call_bytes=1 << 10, backend=backend)
    assert one.backend == three.backend == backend
    assert (one.threads, three.threads) == (1, 3)
    assert [a.tolist() for a in one.encode_batch(texts)] == [a.tolist() for a in three.encode_batch(texts)]
    three.close()


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"normalizer": {"type": "NFKC"}}, "NFKC"),
        ({"pre_tokenizer__add_prefix_space": True}, "add_prefix_space"),
        ({"model__byte_fallback": True}, "byte_fallback"),
        ({"model__dropout": 0.1}, "dropout"),
        ({"model__ignore_merges": True}, "ignore_merges"),
        ({"model__type": "WordPiece"}, "WordPiece"),
        ({"post_processor": {"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}}},
         "TemplateProcessing"),
        ({"added_tokens__1__special": False}, "not a run of spaces"),
    ],
)
def test_fast_encoder_blocker_names_the_reason(changes, reason):
    base = json.loads(shipped().tokenizer.to_str())
    assert reason in fast_encoder_blocker(_with(base, **changes))


@pytest.mark.parametrize(
    "changes",
    [{"model__type": "WordPiece"}, {"model__dropout": 0.1}, {"normalizer": {"type": "NFKC"}},
     {"pre_tokenizer__use_regex": False}, {"pre_tokenizer__add_prefix_space": True},
     {"post_processor": {"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}}}],
)
def test_both_blockers_share_the_structure_checks(changes):
    config = _with(json.loads(shipped().tokenizer.to_str()), **changes)
    assert chunking_blocker(config) == fast_encoder_blocker(config) == pipeline_blocker(config)


def test_fast_encoder_blocker_on_space_run_shapes():
    neox = json.loads(neox_like().tokenizer.to_str())
    assert fast_encoder_blocker(neox) is None
    gap = json.loads(json.dumps(neox))
    gap["added_tokens"] = [t for t in gap["added_tokens"] if t["content"] != " " * 7]
    assert "not every width" in fast_encoder_blocker(gap)
    raw = json.loads(json.dumps(neox))
    raw["added_tokens"][-1]["normalized"] = False
    assert "before normalization" in fast_encoder_blocker(raw)


def test_inconsistent_merges_fall_back(tmp_path, caplog):
    """A merge result that BPE does not reach from its own bytes breaks tiktoken's rank order: tiktoken is
    refused. gigatoken ranks merges as `tokenizers` does: it is admitted, and gives the same ids."""
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    vocab, merges = config["model"]["vocab"], config["model"]["merges"]
    assert not {"qz", "jq", "jqz"} & set(vocab)
    next_id = max(vocab.values()) + 1
    # "jqz" is made from ("jq", "z"), but "q z" merges first: encoding "jqz" alone gives [j, qz].
    for k, (left, right) in enumerate([("q", "z"), ("j", "q"), ("jq", "z")]):
        merges.append([left, right])
        vocab[left + right] = next_id + k
    tok = load_tokenizer(write_config(tmp_path, config))
    assert tok.tokenizer.encode("jqz").ids == [vocab["j"], vocab["qz"]]
    with caplog.at_level(logging.WARNING, logger="pipeline.tokenizer"):
        enc = Encoder(tok, backend="tiktoken")
    assert enc.backend == "tokenizers"
    assert "'jqz' does not encode to itself" in enc.fast_blocker and "jqz" in caplog.text
    assert enc.encode_batch(["jqz"])[0].tolist() == whole_ids(tok, "jqz")
    if _installed("gigatoken"):
        enc = Encoder(tok)
        assert enc.backend == "gigatoken"
        texts = ["jqz", " jqz jqzjqz qz jq", *VARIED]
        assert [x.tolist() for x in enc.encode_batch(texts)] == [whole_ids(tok, t) for t in texts]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_non_monotone_ids_are_mapped_back(tmp_path, backend):
    """Ids that do not grow in merge order: tiktoken ranks follow the merges, ids are mapped back;
    gigatoken reads ids and merges apart."""
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    vocab, merges = config["model"]["vocab"], config["model"]["merges"]
    a, b = (merges[0][0] + merges[0][1]), (merges[1][0] + merges[1][1])
    vocab[a], vocab[b] = vocab[b], vocab[a]
    tok = load_tokenizer(write_config(tmp_path, config))
    fast = _fast_encoding(tok.json_bytes.decode())
    assert not isinstance(fast, str) and fast.id_of_rank is not None
    enc = Encoder(tok, verify_bytes=0, backend=backend)
    assert enc.backend == backend
    texts = VARIED + [dense_text(2_000, seed=9)]
    assert [x.tolist() for x in enc.encode_batch(texts)] == [whole_ids(tok, t) for t in texts]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_a_mismatch_on_the_first_texts_switches_to_tokenizers(caplog, backend):
    enc = Encoder(shipped(), verify_bytes=1 << 10, backend=backend)
    assert enc.backend == backend
    real = enc._fast.encode
    enc._fast.encode = lambda pieces: [a + 1 for a in real(pieces)]  # a broken fast encoder
    with caplog.at_level(logging.ERROR, logger="pipeline.tokenizer"):
        [ids] = enc.encode_batch(["Hello there"])
    assert ids.tolist() == whole_ids(shipped(), "Hello there")
    assert enc.backend == "tokenizers" and "differ" in caplog.text
    assert f"{backend}'s ids differ" in enc.backend_info()["refused"][backend]


def test_encoder_version_is_unchanged():
    from pipeline.tokenizer import ENCODER_VERSION

    assert ENCODER_VERSION == 1  # the fast encoder gives the same ids: caches stay valid
