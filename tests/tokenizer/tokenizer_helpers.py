"""Shared by the tokenizer tests (tests/tokenizer/, mirroring pipeline/tokenizer/): the tokenizers they
encode with, texts, hypothesis strategies, and the `hide_packages` fixture (import it where it is used)."""

import functools
import json
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings, target
from hypothesis import strategies as st

from pipeline.document import Document
from pipeline.sources import SourceSpec, list_source_files, read_documents
from pipeline.sources.kinds import KINDS
from pipeline.tokenizer import (
    Encoder,
    load_tokenizer,
)
from pipeline.tokenizer.fast import _fast_encoding

SHIPPED = Path(__file__).resolve().parents[2] / "tokenizer" / "tokenizer.json"


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
    import atexit
    import tempfile

    path = tempfile.mkdtemp(prefix="mixprep-test-tokenizer-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # when the session ends: every module shares it
    return path


TOKENIZERS = {"shipped": shipped, "neox_like": neox_like}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


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


def _with(config: dict, **changes) -> dict:
    config = json.loads(json.dumps(config))
    for path, value in changes.items():
        node = config
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p] if not p.isdigit() else node[int(p)]
        node[leaf] = value
    return config


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


def dense_text(n_pairs: int, seed: int = 0) -> str:
    """Every fragment next to every separator, many times over: a fixed, denser complement to hypothesis."""
    rng = random.Random(seed)
    fragments = TRICKY + WORDS
    return "".join(rng.choice(fragments) + rng.choice(SEPARATORS) for _ in range(n_pairs))


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


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


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

