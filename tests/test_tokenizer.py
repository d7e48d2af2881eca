"""pipeline.tokenizer: loading, dtype, EOS, round trips, cutting long texts without changing ids, the fast path."""

import functools
import json
import logging
import pickle
import random
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from tokenizers import normalizers

from pipeline.errors import ConfigError, MixprepError
from pipeline.tokenizer import (
    Encoder,
    TokenizerInfo,
    batches_by_bytes,
    batches_by_size,
    chunking_blocker,
    is_safe_cut,
    load_tokenizer,
    safe_cut_points,
    split_at_safe_cuts,
    utf8_len,
)

SHIPPED = Path(__file__).resolve().parents[1] / "tokenizer" / "tokenizer.json"


# --- shared helpers ----------------------------------------------------------------------------


@functools.cache
def shipped():
    return load_tokenizer(str(SHIPPED))


def neox_like_config() -> dict:
    """The shipped tokenizer given GPT-NeoX-20B's structure: NFC normalizer, added tokens of 24..2 spaces."""
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    config["normalizer"] = {"type": "NFC"}
    next_id = max(config["model"]["vocab"].values()) + 1
    for k, width in enumerate(range(24, 1, -1)):
        config["added_tokens"].append(
            {"id": next_id + k, "content": " " * width, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": True, "special": False}
        )
    return config


@functools.cache
def neox_like():
    path = Path(_tmp_dir()) / "neox-like" / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(neox_like_config()), encoding="utf-8")
    return load_tokenizer(str(path))


@functools.cache
def _tmp_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="mixprep-test-tokenizer-")


TOKENIZERS = {"shipped": shipped, "neox_like": neox_like}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# Every backend, each test skipped where its package is not installed (the fallback is tested apart).
FAST_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(not _installed(name), reason=f"{name} not installed"))
                 for name in ("tiktoken", "gigatoken")]
ALL_BACKENDS = ["tokenizers", *FAST_BACKENDS]


@functools.cache
def encoder(which: str, chunk_chars: int, max_call_bytes: int = 256, backend: str = "auto") -> Encoder:
    tok = TOKENIZERS[which]()
    enc = Encoder(tok, chunk_chars=chunk_chars, max_call_bytes=max_call_bytes, backend=backend)
    assert backend == "auto" or enc.backend == backend, enc.fast_blocker
    return enc


def whole_ids(tok, text: str) -> list[int]:
    """Ids of one `encode` call on the whole text, EOS appended: what chunking must reproduce."""
    return tok.tokenizer.encode(text, add_special_tokens=False).ids + [tok.eos_id]


def write_config(tmp_path: Path, config: dict, name: str = "tokenizer.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def teardown_module(module):
    shutil.rmtree(_tmp_dir(), ignore_errors=True)


# --- the shipped tokenizer, loading, dtype ------------------------------------------------------


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


# --- encoding -----------------------------------------------------------------------------------

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


def _with(config: dict, **changes) -> dict:
    config = json.loads(json.dumps(config))
    for path, value in changes.items():
        node = config
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p] if not p.isdigit() else node[int(p)]
        node[leaf] = value
    return config


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


# --- where texts may be cut ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, i, safe",
    [
        ("a b", 1, True),
        ("a. The", 2, True),
        ("<|endoftext|> And", 13, True),  # right after an added token
        ("e\u0301 x", 2, True),  # after a combining mark: the mark stays with its base
        ("a  b", 1, True),  # before a run of spaces (GPT-NeoX: an added token), which stays whole
        ("a 1", 1, True),
        ("a \u0301", 1, True),
        ("x 's", 1, True),
        ("a ", 1, True),
        ("a  b", 2, False),  # inside a run of spaces
        ("a\tb", 1, False),  # only before ASCII spaces
        ("a\u00a0b", 1, False),
        ("\u00a0 b", 1, False),  # after whitespace (NBSP is whitespace to the regex)
        ("\n b", 1, False),
        ("\u200b b", 1, False),  # after characters older Unicode versions called spaces
        ("ab", 1, False),
        (" b", 0, False),
        ("a b", 3, False),
    ],
)
def test_is_safe_cut(text, i, safe):
    assert is_safe_cut(text, i) is safe


def test_cut_points_are_safe_and_pieces_join():
    text = "The quick brown fox, don't you know? It's 42 km\u00a0away.\n\n" * 40
    cuts = safe_cut_points(text, chunk_chars=64)
    assert len(cuts) > 20
    assert all(is_safe_cut(text, i) for i in cuts)
    pieces = split_at_safe_cuts(text, chunk_chars=64)
    assert "".join(pieces) == text
    assert all(len(p) >= 64 for p in pieces[:-1])


def test_no_safe_cut_means_one_piece():
    cjk = "東京は日本の首都です。" * 1000
    assert safe_cut_points(cjk, chunk_chars=64) == []
    assert encoder("shipped", 64).pieces(cjk) == [cjk]
    # The first safe cut lies far past the target: the piece grows to reach it.
    text = cjk + " and then English words follow"
    assert split_at_safe_cuts(text, chunk_chars=64) == [cjk, " and then English words follow"]


def test_cut_scan_agrees_with_is_safe_cut_for_every_code_point():
    """The regex used for scanning and `is_safe_cut` judge every preceding character alike."""
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        text = chr(cp) + " "
        assert safe_cut_points(text, chunk_chars=1) == ([1] if is_safe_cut(text, 1) else []), hex(cp)


@pytest.mark.slow
def test_facts_the_cut_rule_rests_on_hold_for_every_code_point():
    """For every character X that `is_safe_cut` accepts before the space, with this tokenizers build:

    the pre-tokenizer never puts X and the space in one pre-token (X is not `\\s` to its regex), and
    its NFC never yields whitespace; and for every character, NFC(X + " ") == NFC(X) + " ".
    """
    pre = shipped().tokenizer.pre_tokenizer
    nfc = normalizers.NFC().normalize_str
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        x = chr(cp)
        assert nfc(x + " ") == nfc(x) + " ", hex(cp)
        if is_safe_cut(x + " ", 1):
            assert len(pre.pre_tokenize_str(x + " ")) == 2, hex(cp)
            assert not any(c.isspace() for c in nfc(x)), hex(cp)


# --- chunked encoding == whole encoding -------------------------------------------------------

# Fragments where a wrong cut would show: added tokens and near-misses, contractions, combining marks
# and NFC compositions, whitespace the regex treats as \s (or not), space runs (GPT-NeoX added tokens).
TRICKY = [
    "<|endoftext|>", "<|padding|>", "<|endoftext|><|endoftext|>", "<|", "|>", "<|endoftext", "endoftext|>",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'", "'S", "don't", "it's", "we'll", "''",
    "e\u0301", "A\u030a", "\u212b", "\u0301", "\u0308\u0323", "\u0345", "\u1100\u1161\u11a8", "\u1161", "\u11a8",
    "\u00a0", "\u3000", "\u2000", "\u2009", "\u200b", "\u180e", "\ufeff", "\u0085", "\u2028", "\x0b", "\x1c",
]
WORDS = [
    "the", "The", "word", "Hello", "x", "I", "a", "Z", "é", "\u00c5", "ﬁ", "0", "42", "3.14", "1,000", "²", "½",
    ",", ".", "!", "?", "...", "—", "(", ")", '"', "#", "_", "->", "東京", "日本語。", "한국어",
    "👩\u200d👩\u200d👧", "🙂", "\u200d", "مرحبا", "שלום", "def f(x):\n\treturn x",
]
SEPARATORS = [" "] * 12 + [
    "", "  ", "   ", " " * 24, " " * 25, "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\n  ", " \t ", "\u00a0", " \u00a0",
    "\u00a0  ", "\u3000", "\u3000  ", "\u2000", " \u2000", "\u2000  ", " \u0301", " '",
]
_word = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from(sorted(set("".join(TRICKY + WORDS + SEPARATORS)))), min_size=1, max_size=6),
    st.text(min_size=1, max_size=3),  # anything else Unicode has
)
# Words and separators alternate, separators mostly a single space, so that cut points are frequent.
documents = st.lists(st.tuples(_word, st.sampled_from(SEPARATORS)), max_size=60).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
cut_property = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_chunked_equals_whole(which: str, texts: list[str], chunk_chars: int, backend: str = "auto") -> None:
    enc = encoder(which, chunk_chars, backend=backend)
    tok = TOKENIZERS[which]()
    pieces = sum(len(enc.pieces(t)) for t in texts)
    event(f"cuts: {min(pieces - len(texts), 10)}{'+' if pieces - len(texts) >= 10 else ''}")
    target(float(pieces), label="pieces")
    assert [a.tolist() for a in enc.encode_batch(texts)] == [whole_ids(tok, t) for t in texts]


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


def dense_text(n_pairs: int, seed: int = 0) -> str:
    """Every fragment next to every separator, many times over: a fixed, denser complement to hypothesis."""
    rng = random.Random(seed)
    fragments = TRICKY + WORDS
    return "".join(rng.choice(fragments) + rng.choice(SEPARATORS) for _ in range(n_pairs))


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


def make_long_document(n_chars: int, seed: int = 0) -> str:
    """Deterministic prose-like text: varied words, contractions, numbers, spaces, tabs and newlines."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "tra", "ven", "sho", "qu", "ex", "ph", "ion", "the", "and", "ing", "st", "Ar", "Bel"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(20000)]
    words += ["don't", "it's", "3.14", "1999", "(x)", "foo_bar", "a.b", '"quoted"', "e.g.,", "na\u00efve"]
    words += ["<|endoftext|>"]
    separators = [" "] * 40 + ["  ", "\n", "\n\n", ", ", ". ", "\t", "    ", " " * 30]
    n_words = n_chars // 5 + 1  # a word with its separator averages more than 5 characters
    while True:
        text = "".join(w + sep for w, sep in zip(rng.choices(words, k=n_words), rng.choices(separators, k=n_words)))
        if len(text) >= n_chars:
            return text[:n_chars]
        n_words *= 2


@pytest.mark.slow
def test_twenty_million_character_document():
    tok = shipped()
    text = make_long_document(20_000_000)
    enc = Encoder(tok)
    assert len(enc.pieces(text)) > 100
    [ids] = enc.encode_batch([text])
    assert ids.tolist() == whole_ids(tok, text)


# --- batching -----------------------------------------------------------------------------------


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


# --- the fast backends (tiktoken, gigatoken) give the ids of `tokenizers` ------------------------

tiktoken = pytest.importorskip("tiktoken")

from pipeline.document import Document  # noqa: E402
from pipeline.sources import SourceSpec, list_source_files, read_documents  # noqa: E402
from pipeline.sources.kinds import KINDS  # noqa: E402
from pipeline.tokenizer.fast import PROBE_TEXT, _fast_encoding, _fast_pattern, fast_encoder_blocker  # noqa: E402
from pipeline.tokenizer.structure import pipeline_blocker  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
VARIED = [
    "", " ", "  ", "a", "Hello world", "It's John's 'quoted' text, we'LL see; they'd've",
    "naïve café Ünïcödé e\u0301 A\u030a \u212b \u1100\u1161\u11a8 ﬁ ½ ² ٣٤٥ 東京は日本の首都です。 한국어",
    "👩\u200d👩\u200d👧🙂 \u200d\u200b\u180e\ufeff <|endoftext|> <|padding|> <|endoftext",
    "def f(x):\n\treturn x  # comment\n    if y:\n        pass\n\n\n" + " " * 24 + "z" + " " * 25 + "w" + " " * 49,
    "tabs\t\t\tand\u00a0\u00a0nbsp \u3000\u3000 \u2000\u2009\u0085\u2028\x0b\x1c\r\n\r\n  \n \n   \t \n ",
    "=" * 300 + " " + "x" * 5000 + " " + "1234567890" * 30 + " " * 100 + "\n" * 50,
    "mixed 12abc 3.14e-10 0x1F foo_bar->baz(**kw) {'k': [1, 2]} // /* */ <tag attr=\"v\"/>",
]


def _sample_texts() -> list[str]:
    """Every document under samples/, read by mixprep's own readers."""
    texts = []
    for kind in ("refinedweb", "c4", "redpajama", "pile", "starcoder"):
        root = {"refinedweb": "tiiuae/falcon-refinedweb", "c4": "allenai/c4", "redpajama":
                "togethercomputer/RedPajama-Data-1T", "pile": "EleutherAI/pile", "starcoder": "bigcode/starcoderdata"}[kind]  # noqa: E501
        spec = SourceSpec(name=kind, kind=kind, root=root)
        for sf in list_source_files(spec, str(SAMPLES)):
            texts += [d.text for d in read_documents(spec, sf) if isinstance(d, Document)]
    spec = SourceSpec(name="internal", kind="files", root="internal", paths=("notes/*",), text_field="body")
    for sf in list_source_files(spec, str(SAMPLES)):
        texts += [d.text for d in read_documents(spec, sf) if isinstance(d, Document)]
    assert KINDS and len(texts) > 1500
    return texts


@functools.cache
def fast_encoder(which: str, backend: str) -> Encoder:
    enc = Encoder(TOKENIZERS[which](), chunk_chars=1 << 12, max_call_bytes=1 << 16, verify_bytes=0, backend=backend)
    assert enc.backend == backend, enc.fast_blocker
    return enc


def _check_fast_equals_tokenizers(which: str, texts: list[str], backend: str) -> None:
    enc = fast_encoder(which, backend)
    tok = TOKENIZERS[which]()
    got = [a.tolist() for a in enc.encode_batch(texts)]
    want = [e.ids + [tok.eos_id] for e in tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    assert got == want


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


@pytest.fixture
def hide_packages(monkeypatch):
    """`hide_packages("tiktoken", ...)` makes their imports fail, as where they are not installed; the
    per-process gate caches are cleared before and after, so no other test sees a refused backend."""
    import builtins

    from pipeline.tokenizer.giga import _gigatoken_model

    def hide(*names: str) -> None:
        real_import = builtins.__import__

        def refuse(name, *args, **kwargs):
            if name.split(".")[0] in names:
                raise ImportError(f"No module named {name!r}")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", refuse)
        _fast_encoding.cache_clear()
        _gigatoken_model.cache_clear()

    yield hide
    monkeypatch.undo()
    _fast_encoding.cache_clear()
    _gigatoken_model.cache_clear()


def test_fast_encoder_falls_back_without_tiktoken_and_gigatoken(hide_packages, caplog):
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


def test_a_forced_backend_its_gate_refuses_gives_tokenizers(hide_packages, caplog):
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
