"""The gigatoken backend: gigatoken's byte-level BPE loaded from the same tokenizer.json, and its gate.

gigatoken (`pip install 'mixprep[fast]'`) is ~10-20x faster than tiktoken on one core, but young,
and no argument shows its ids are `tokenizers`' (it reimplements the regex, NFC and BPE by hand). So
it is admitted by checks only (docs/TOKENIZER.md, "The gigatoken backend"), each step naming why not:

1. structure (`gigatoken_blocker`): the shape the tiktoken gate admits (`fast.fast_encoder_blocker`:
   byte-level BPE, GPT-2 regex, NFC or no normalizer, non-special added tokens only runs of spaces);
2. loading (`_gigatoken_model`, once per process): gigatoken loads the file with its special tokens
   left out (it always matches them; mixprep encodes them as text) and without its normalizer (NFC
   is applied here, by Python's `unicodedata`, exactly as on the tiktoken path), and its vocabulary
   and merges must be the file's, entry for entry;
3. character classes (`CLASS_DIFFERENCES`): its Unicode tables are newer than `tokenizers`' (it
   takes 4,657 code points, new in Unicode 17, for letters and numbers where `tokenizers` sees
   unassigned ones), so texts holding one go to `tokenizers` (`NeedsReference`), as texts with lone
   surrogates do; the table is measured for every code point by tests/tokenizer/test_giga.py,
   and a gigatoken or tokenizers release it was not measured for is refused;
4. probes (`probe_texts`): literal special tokens, NFC, space runs, long pre-tokens, every kind of
   whitespace; then a sample of the bundled real texts (`real_sample`): ids equal to `tokenizers`'.
The `Encoder` then also compares the first texts it encodes, as for tiktoken.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fast import PROBE_TEXT, _byte_chars, _PiecesBackend, fast_encoder_blocker
from .structure import components

# How much of the bundled sample corpora the gate compares at start-up (~0.1 s of `tokenizers`).
SAMPLE_BYTES = 1 << 18
# Plain JSON-lines samples (no reader needed): prose, Q&A, Wikipedia, web, LaTeX, code, notes.
_SAMPLE_FILES = (
    "togethercomputer/RedPajama-Data-1T/book/book.jsonl",
    "togethercomputer/RedPajama-Data-1T/stackexchange/stackexchange.jsonl",
    "togethercomputer/RedPajama-Data-1T/wikipedia/wiki.jsonl",
    "togethercomputer/RedPajama-Data-1T/c4/c4-train.00000-of-01024.jsonl",
    "togethercomputer/RedPajama-Data-1T/arxiv/arxiv_4bf3627e-dbe7-44cb-a234-8d12625a99f6.jsonl",
    "togethercomputer/RedPajama-Data-1T/github/filtered_e0f609cadd78e8441afd07b5a21fe936.sampled.jsonl",
    "internal/notes/part-00000.jsonl",
)


# Code points whose regex class (\p{L}, \p{N}, \s or none) gigatoken and `tokenizers` disagree on,
# as (first, last) ranges, per (gigatoken, tokenizers) version pair: measured for every code point
# outside ASCII (tests/tokenizer/test_giga.py::test_the_class_table_is_measured_for_every_code_point).
# All are new in Unicode 17 (gigatoken's tables), unassigned in `tokenizers`' (older) ones.
CLASS_DIFFERENCES: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {
    ("0.10.0", "0.23.3"): (
        (0x088F, 0x088F),
        (0x0C5C, 0x0C5C),
        (0x0CDC, 0x0CDC),
        (0xA7CE, 0xA7CF),
        (0xA7D2, 0xA7D2),
        (0xA7D4, 0xA7D4),
        (0xA7F1, 0xA7F1),
        (0x10940, 0x10959),
        (0x10EC5, 0x10EC7),
        (0x11DB0, 0x11DDB),
        (0x11DE0, 0x11DE9),
        (0x16EA0, 0x16EB8),
        (0x16EBB, 0x16ED3),
        (0x16FF2, 0x16FF6),
        (0x187F8, 0x187FF),
        (0x18D09, 0x18D1E),
        (0x18D80, 0x18DF2),
        (0x1E6C0, 0x1E6DE),
        (0x1E6E0, 0x1E6E2),
        (0x1E6E4, 0x1E6E5),
        (0x1E6E7, 0x1E6ED),
        (0x1E6F0, 0x1E6F4),
        (0x1E6FE, 0x1E6FF),
        (0x2B73A, 0x2B73F),
        (0x2CEA2, 0x2CEAD),
        (0x323B0, 0x33479),
    ),
}


class NeedsReference(ValueError):
    """A text the backend must not encode (a character whose class it sees differently): the
    `Encoder` encodes the call with `tokenizers` instead, as for lone surrogates."""


def _class_table(gigatoken: str, tokenizers: str) -> np.ndarray | str:
    """A bool per code point: the characters gigatoken must not see; or why gigatoken is refused.
    (A lookup of a text's code points in it runs at ~450M characters/s; `re` ran at ~25M.)"""
    ranges = CLASS_DIFFERENCES.get((gigatoken, tokenizers))
    if ranges is None:
        return (f"gigatoken {gigatoken}'s character classes have not been compared with tokenizers {tokenizers}'s "
                f"(pipeline.tokenizer.giga.CLASS_DIFFERENCES holds {sorted(CLASS_DIFFERENCES)}; "
                "tests/tokenizer/test_giga.py measures the table for the installed versions)")
    table = np.zeros(0x110000, dtype=bool)
    for first, last in ranges:
        table[first:last + 1] = True
    return table


def gigatoken_blocker(config: Mapping[str, Any]) -> str | None:
    """Why gigatoken is not admitted for this tokenizer (structurally), or None.

    The same shape as the tiktoken gate: tested against `tokenizers` on every code point for
    that shape (tests/tokenizer/test_giga.py). gigatoken loads more (other split regexes,
    other added tokens) and silently ignores some settings (BPE dropout): those are refused.
    """
    return fast_encoder_blocker(config)


def _without_specials(config: Mapping[str, Any]) -> dict:
    """What gigatoken loads: `config` with its special added tokens left out and no normalizer.

    Special tokens: the `Encoder` encodes them as text (`encode_special_tokens`), and gigatoken,
    given them, always matches them. `tokenizers` still matches non-special added tokens inside a
    special one's text, as gigatoken does without it. Normalizer: the gate admits none or NFC only;
    NFC is applied before gigatoken by `unicodedata` (`_GigatokenBackend.encode_one`), the NFC the
    tiktoken path uses and the tests compare with `tokenizers`' on every code point, so gigatoken's
    own (ICU) NFC is never relied on. The non-special added tokens the gate admits (runs of spaces)
    are matched after normalization, so matching them in already normalized text is the same.
    """
    added = [t for t in config.get("added_tokens") or [] if not t.get("special")]
    return dict(config, added_tokens=added, normalizer=None)


def gigatoken_version() -> str | None:
    """The installed gigatoken's version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gigatoken")
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class _GigaModel:
    model: Any  # gigatoken_rs.BPETokenizer, loaded by `_without_specials`
    version: str
    nfc: bool = False  # apply NFC before gigatoken (the file's normalizer is NFC)
    avoid: np.ndarray | None = None  # per code point: texts holding one go to `tokenizers`
    loaded: str = ""  # the JSON gigatoken loaded: each encoding thread loads its own copy

    def another(self) -> Any:
        """A second gigatoken tokenizer from the same JSON: one object must not encode on two threads
        at once (gigatoken raises "RuntimeError: Already borrowed")."""
        from gigatoken.gigatoken_rs import load_hf_json

        return load_hf_json(self.loaded)


@functools.cache
def _to_bytes_table() -> dict[int, str]:
    """str.translate table: byte-level symbol -> the character of its byte's Latin-1 code; every other
    character below U+0144 (the alphabet's last) -> U+0100, so Latin-1 encoding fails on it."""
    table = {cp: "\u0100" for cp in range(0x144)}
    table.update({ord(c): chr(b) for b, c in _byte_chars().items()})
    return table


def _level_bytes(token: str) -> bytes | None:
    """A byte-level token's bytes, or None when it has a character outside the byte-level alphabet."""
    try:
        return token.translate(_to_bytes_table()).encode("latin-1")
    except UnicodeEncodeError:
        return None


def _all_level_bytes(tokens: Sequence[str]) -> list[bytes | None]:
    """`_level_bytes` of each token: one translation of them all when every one is byte-level (each
    character is one byte, so the bytes split where the characters do), else token by token."""
    try:
        joined = "".join(tokens).translate(_to_bytes_table()).encode("latin-1")
    except UnicodeEncodeError:
        return [_level_bytes(t) for t in tokens]
    out, at = [], 0
    for t in tokens:
        out.append(joined[at:at + len(t)])
        at += len(t)
    return out


def _expected_vocabulary(config: Mapping[str, Any]) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]] | str:
    """The vocabulary (id -> bytes) and merges gigatoken must hold for `config` without its specials."""
    model = config["model"]
    specials = {t.get("content") for t in config.get("added_tokens") or [] if t.get("special")}
    missing = [c for c in _byte_chars().values() if c not in model["vocab"]]
    if missing:
        return f"{len(missing)} of the 256 byte symbols are not in the vocabulary"
    vocab: dict[int, bytes] = {}
    tokens = list(model["vocab"])
    for token, tid, data in zip(tokens, model["vocab"].values(), _all_level_bytes(tokens)):
        if data is None:
            if token not in specials:
                return f"vocabulary entry {token!r} is not byte-level"
            data = token.encode("utf-8")  # a special token in the model's vocabulary too
        vocab[tid] = data
    for tok in config.get("added_tokens") or []:
        if not tok.get("special"):
            vocab[tok["id"]] = tok["content"].encode("utf-8")
    sides = [merge if isinstance(merge, list) else merge.split(" ") for merge in model["merges"]]
    flat = _all_level_bytes([side for pair in sides for side in pair])
    merges = list(zip(flat[0::2], flat[1::2]))
    for (left, right), pair in zip(sides, merges):
        if None in pair:
            return f"merge {left!r} + {right!r} is not byte-level"
    return vocab, merges


@functools.lru_cache(maxsize=4)
def filled_config(json_text: str) -> dict:
    """The tokenizer.json as `tokenizers` reads it back (defaults filled in); once per process, shared:
    do not change it."""
    from tokenizers import Tokenizer

    return json.loads(Tokenizer.from_str(json_text).to_str())


@functools.lru_cache(maxsize=4)
def _gigatoken_model(json_text: str) -> _GigaModel | str:
    """gigatoken's tokenizer for a tokenizer.json, checked to hold its vocabulary, or why not. Once per process."""
    try:
        from gigatoken.gigatoken_rs import load_hf_json
    except ImportError:
        return "gigatoken is not installed (pip install 'mixprep[fast]')"
    import tokenizers

    avoid = _class_table(gigatoken_version() or "?", tokenizers.__version__)
    if isinstance(avoid, str):
        return avoid
    config = filled_config(json_text)
    blocker = gigatoken_blocker(config)
    if blocker:
        return blocker
    expected = _expected_vocabulary(config)
    if isinstance(expected, str):
        return expected
    try:
        loaded = json.dumps(_without_specials(config))
        model = load_hf_json(loaded)
    except BaseException as e:  # RuntimeError for what it does not support; a Rust panic is a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return f"gigatoken could not load the tokenizer: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
    if type(model).__name__ != "BPETokenizer":
        return f"gigatoken loaded it as {type(model).__name__}, not byte-level BPE"
    vocab, merges = expected
    got_vocab = model.vocab
    if got_vocab != vocab:
        diff = sorted(set(got_vocab.items()) ^ set(vocab.items()))[:3]
        return f"gigatoken's vocabulary differs from the file's ({len(got_vocab)} vs {len(vocab)} entries; e.g. {diff})"
    if model.merges != merges:
        return f"gigatoken's merges differ from the file's ({len(model.merges)} vs {len(merges)} rules)"
    nfc = bool(components(config.get("normalizer"), "normalizers"))  # the gate admitted NFC or nothing
    return _GigaModel(model, gigatoken_version() or "?", nfc, avoid, loaded)


def probe_texts(config: Mapping[str, Any]) -> list[str]:
    """Texts gigatoken must encode exactly as `tokenizers` before it is used (besides `PROBE_TEXT`).

    Each special token's text in the contexts a document gives it (it must stay text), space runs of
    every width up to past the longest added one, NFC compositions and decompositions, long
    pre-tokens and control characters.
    """
    specials = [t["content"] for t in config.get("added_tokens") or [] if t.get("special")]
    runs = [len(t["content"]) for t in config.get("added_tokens") or [] if not t.get("special")]
    widths = range(1, max(runs, default=24) + 3)
    texts = [PROBE_TEXT, *specials]
    texts += [f"{s} x{s}y {s}{s}\n{s}  {s}" for s in specials]
    texts.append("".join(f"a{' ' * w}b{' ' * w}\n{' ' * w}\t{' ' * w}" for w in widths))
    texts.append(" e\u0301 A\u030a \u212b \u1100\u1161\u11a8 \u0041\u0308\u0304 \u00c5 \u2126 \u0958 \ufb1d \u1e0b\u0323 "  # noqa: E501
                 "\u0f73 \u0344 \u0374 \u037e \u1f71 \u2000 \u2329 \uf900 \U0001d15e \U0002f800 q\u0307\u0323")
    texts.append("x" * 5000 + " " + "ab" * 3000 + " " + "\u00e9" * 2000 + " " + "9" * 3000 + " " + "." * 3000)
    texts.append("\x00\x01\x7f\x80\u00ad\ufffd\ufeff\U0010ffff\U000e0001 \r\r\n\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029")
    texts += ["", " ", "\n", "'s", " 's", "''s"]
    return texts


@functools.lru_cache(maxsize=1)
def real_sample(max_bytes: int = SAMPLE_BYTES) -> tuple[str, ...]:
    """Up to `max_bytes` of text from the bundled sample corpora, a share from each (empty if absent)."""
    from ..bundled import bundled

    root = bundled("samples")
    files = [os.path.join(root, f) for f in _SAMPLE_FILES] if root else []
    files = [f for f in files if os.path.isfile(f)]
    texts: list[str] = []
    for path in files:
        left = max_bytes // len(files)
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                text = record.get("text") or record.get("body") or ""
                texts.append(text[:left])
                left -= len(texts[-1])
                if left <= 0:
                    break
    return tuple(texts)


class _GigatokenBackend(_PiecesBackend):
    """Encodes pieces with gigatoken, one numpy array each; `threads` > 1 encodes pieces concurrently.

    `encode` (one text -> uint32 array) is used rather than `encode_batch`: no awkward Array to build
    (its first call imports awkward, ~0.25 s a process) and no rayon pool. gigatoken's batch calls
    fan out on a process-wide rayon pool, or, in a process it takes for a multiprocessing worker or
    a forked child, run on one thread; its `encode` releases the GIL, so the threads here are
    mixprep's own: exactly `threads`, wherever the `Encoder` runs (docs/PERFORMANCE.md has the
    measurements: Beam's local workers are fresh interpreters, one per core, one thread each).
    """

    name = "gigatoken"
    # A gigatoken tokenizer keeps a cache of what it has encoded that only grows (measured: ~0.23 byte a
    # character of real text, ~170 bytes a short document; a worker's memory doubled from 5M to 20M
    # documents). Each thread's tokenizer is replaced once it has encoded RENEW_AFTER characters,
    # counting DOCUMENT_CHARS more per document; dropping one frees its cache. A load takes ~0.1 s
    # (GPT-NeoX's 50k vocabulary): ~2% of the encode time the budget buys.
    RENEW_AFTER = 1 << 30
    DOCUMENT_CHARS = 1024

    def __init__(self, model: _GigaModel, dtype: np.dtype, threads: int):
        self._model = model
        self._nfc = model.nfc
        self._avoid = model.avoid
        self._dtype = np.dtype(dtype)
        self.version = model.version
        # Per thread: its tokenizer's encode and the budget left. The first thread to encode takes the
        # model's tokenizer, already loaded; every other one, and each renewal, loads its own
        # (`_GigaModel.another`): one object must never encode on two threads.
        self._local = threading.local()
        self._first, self._handoff = model.model.encode, threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mixprep-encode") if threads > 1 else None

    def _encoder(self, cost: int):
        local = self._local
        left = getattr(local, "left", 0)
        if left <= 0:
            with self._handoff:
                first, self._first = self._first, None
            local.encode, left = first or self._model.another().encode, self.RENEW_AFTER
        local.left = left - cost
        return local.encode

    def encode_one(self, text: str) -> np.ndarray:
        encode = self._encoder(len(text) + self.DOCUMENT_CHARS)
        if not text.isascii():  # ASCII is its own NFC, and has no character gigatoken sees differently
            if self._nfc:  # as the tiktoken path
                text = unicodedata.normalize("NFC", text)
            codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
            if self._avoid is not None and self._avoid[codes].any():
                raise NeedsReference("a character whose class gigatoken and tokenizers disagree on")
        try:
            ids = encode(text)
        except TypeError:  # gigatoken's error for a str with a lone surrogate: tiktoken's, for the `Encoder`
            text.encode("utf-8")  # raises UnicodeEncodeError if that is the reason
            raise
        return ids.astype(self._dtype, copy=False)
