"""pipeline.tokenizer.encoder: encoding, EOS, round trips, chunked == whole encoding, batching."""

import json
import logging
import unicodedata

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizer_helpers import (
    ALL_BACKENDS,
    SHIPPED,
    TOKENIZERS,
    _check_chunked_equals_whole,
    _with,
    cut_property,
    dense_text,
    documents,
    encoder,
    make_long_document,
    neox_like,
    shipped,
    whole_ids,
    write_config,
)

from pipeline.tokenizer import (
    Encoder,
    batches_by_bytes,
    batches_by_size,
    chunking_blocker,
    load_tokenizer,
    utf8_len,
)

ROUND_TRIP = [
    "Hello, world! It's a test: we'll see, they've said, I'm sure, he'd know.",
    "東京は日本の首都です。北京是中国的首都。안녕하세요 세계",
    "family 👩\u200d👩\u200d👧\u200d👦, flag 🏳\ufe0f\u200d🌈, thumbs 👍🏽 🙂",
    "combining: e\u0301 vs \u00e9, A\u030a vs \u00c5, Z\u0351\u0352\u0353, \u1100\u1161\u11a8",
    "RTL: مرحبا بالعالم — שלום עולם (mixed 123 עברית)",
    "def f(x):\n\tif x:\n\t\treturn x  # comment\n    else:\n        pass\n",
    "a  b   c    d\n\n\n  \t \r\n end" + " " * 30 + "\n\n",
    "   leading and trailing   ",
    "nbsp 100\u00a0km, thin\u2009space, ideographic\u3000space, zwsp\u200bhere",
    "∀x∈ℝ: x² ≥ 0; ﬁ ligature; ½",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(text):
    tok = shipped()
    [ids] = Encoder(tok).encode_batch([text])
    assert ids[-1] == tok.eos_id
    assert tok.tokenizer.decode(ids[:-1].tolist(), skip_special_tokens=False) == text


def test_eos_appended_to_every_document():
    tok = shipped()
    texts = ["one", "", "two words", "<|endoftext|>", "x" * 5000]
    arrays = Encoder(tok, max_call_bytes=8).encode_batch(texts)
    assert len(arrays) == len(texts)
    for text, ids in zip(texts, arrays):
        assert ids.dtype == np.uint16
        assert ids.tolist() == whole_ids(tok, text)
        assert ids[-1] == 0
    assert arrays[1].tolist() == [0]


def test_blocked_pipeline_is_encoded_whole_and_logged(tmp_path, caplog):
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    config["normalizer"] = {"type": "Lowercase"}
    tok = load_tokenizer(write_config(tmp_path, config))
    text = "Some Words " * 50
    with caplog.at_level(logging.WARNING, logger="pipeline.tokenizer"):
        enc = Encoder(tok, chunk_chars=16)
    assert "Lowercase" in caplog.text and "encoded whole" in caplog.text
    assert enc.pieces(text) == [text]
    assert enc.encode_batch([text])[0].tolist() == whole_ids(tok, text)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"normalizer": {"type": "NFKC"}}, "NFKC"),
        ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}}, "Lowercase"),
        ({"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}},
         "Metaspace"),
        ({"pre_tokenizer__use_regex": False}, "use_regex"),
        ({"pre_tokenizer__add_prefix_space": True}, "add_prefix_space"),
        ({"post_processor": {"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}}},
         "TemplateProcessing"),
        ({"added_tokens__0__lstrip": True}, "lstrip"),
        ({"added_tokens__1__content": "<pad> x"}, "space after"),
        ({"model__type": "WordPiece"}, "WordPiece"),
    ],
)
def test_chunking_blocker_names_the_unproven_part(changes, reason):
    base = json.loads(shipped().tokenizer.to_str())
    assert reason in chunking_blocker(_with(base, **changes))


def test_chunking_allows_sequences_of_proven_parts():
    base = json.loads(shipped().tokenizer.to_str())
    seq = _with(
        base,
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]},
        pre_tokenizer={"type": "Sequence", "pretokenizers": [base["pre_tokenizer"]]},
        post_processor={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
    )
    assert chunking_blocker(seq) is None


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@cut_property
@given(texts=st.lists(documents, min_size=1, max_size=3), chunk_chars=st.sampled_from([1, 16, 64]))
def test_chunked_equals_whole(backend, texts, chunk_chars):
    _check_chunked_equals_whole("shipped", texts, chunk_chars, backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@cut_property
@given(texts=st.lists(documents, min_size=1, max_size=3), chunk_chars=st.sampled_from([1, 16, 64]))
def test_chunked_equals_whole_with_gpt_neox_structure(backend, texts, chunk_chars):
    _check_chunked_equals_whole("neox_like", texts, chunk_chars, backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("which", ["shipped", "neox_like"])
def test_cutting_at_every_safe_point_of_a_dense_text(which, backend):
    tok = TOKENIZERS[which]()
    text = dense_text(60_000)
    enc = encoder(which, 1, max_call_bytes=1 << 16, backend=backend)  # chunk_chars=1: a cut at every safe point
    assert len(enc.pieces(text)) > 20_000
    assert enc.encode_batch([text])[0].tolist() == whole_ids(tok, text)


def test_gpt_neox_structure_is_exercised():
    """The NeoX-like tokenizer really normalizes and matches space runs as added tokens."""
    tok = neox_like()
    ids = tok.tokenizer.encode("a" + " " * 5 + "b").ids
    assert tok.tokenizer.token_to_id(" " * 5) in ids
    assert tok.tokenizer.decode(tok.tokenizer.encode("e\u0301").ids) == unicodedata.normalize("NFC", "e\u0301")
    text = "Word one" + " " * 7 + "two three\u0301 four"
    assert encoder("neox_like", 1).pieces(text) == ["Word", " one", " " * 7 + "two", " three\u0301", " four"]
    assert encoder("neox_like", 1).encode_batch([text])[0].tolist() == whole_ids(tok, text)


@pytest.mark.slow
def test_twenty_million_character_document():
    tok = shipped()
    text = make_long_document(20_000_000)
    enc = Encoder(tok)
    assert len(enc.pieces(text)) > 100
    [ids] = enc.encode_batch([text])
    assert ids.tolist() == whole_ids(tok, text)


def test_batches_by_bytes():
    items = ["aa", "é", "b" * 10, "", "ccc", "東"]  # é is 2 bytes, 東 is 3
    batches = list(batches_by_bytes(items, str, max_bytes=4))
    assert batches == [["aa", "é"], ["b" * 10], ["", "ccc"], ["東"]]
    assert [x for b in batches for x in b] == items
    for batch in batches:
        assert len(batch) == 1 or sum(utf8_len(x) for x in batch) <= 4
    assert list(batches_by_bytes([], str)) == []


def test_batches_by_size_counts_what_it_is_given():
    assert list(batches_by_size(["aa", "é", "bbb"], len, max_size=3)) == [["aa", "é"], ["bbb"]]
    assert list(batches_by_bytes(["aa", "é", "bbb"], str, max_bytes=3)) == [["aa"], ["é"], ["bbb"]]
    with pytest.raises(ValueError):
        next(batches_by_size(["a"], len, max_size=0))


def test_batches_by_bytes_uses_text_of():
    docs = [{"id": i, "text": "x" * i} for i in range(5)]
    batches = list(batches_by_bytes(docs, lambda d: d["text"], max_bytes=4))
    assert [[d["id"] for d in b] for b in batches] == [[0, 1, 2], [3], [4]]
