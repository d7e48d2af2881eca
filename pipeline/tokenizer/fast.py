"""The fast path: a tiktoken Encoding built from the same tokenizer.json, and the gate that admits it.

When `tiktoken` is installed (`pip install 'mixprep[fast]'`) and the tokenizer is byte-level BPE that
tiktoken can express exactly, the `Encoder` encodes with `_fast_encoding`'s Encoding (~3-6x faster,
same ids). The gate has three steps (docs/TOKENIZER.md, "The fast encoder", has the proof):
`fast_encoder_blocker` checks the structure; `_fast_encoding` checks the vocabulary (byte symbols,
merge results unique and self-consistent); the `Encoder` compares ids with `tokenizers` on
`PROBE_TEXT` and on the first texts it encodes.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .structure import GPT2_PATTERN, components, looks_past, pipeline_blocker


@functools.cache
def _byte_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte -> the printable character `tokenizers` writes for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _space_runs(config: Mapping[str, Any]) -> tuple[dict[int, int], str | None]:
    """Non-special added tokens as {width: id} when all are runs of 2..N spaces, else why not."""
    has_normalizer = bool(components(config.get("normalizer"), "normalizers"))
    runs: dict[int, int] = {}
    for tok in config.get("added_tokens") or []:
        if tok.get("special"):
            continue  # never matched: Encoder sets encode_special_tokens
        content = tok.get("content", "")
        flag = looks_past(tok)
        if flag:
            return {}, f"added token {content!r} has {flag}=true"
        if len(content) < 2 or content.strip(" "):
            return {}, f"non-special added token {content!r} is not a run of spaces"
        if has_normalizer and not tok.get("normalized", True):
            return {}, f"added token {content!r} is matched before normalization"
        runs[len(content)] = tok["id"]
    if runs and sorted(runs) != list(range(2, max(runs) + 1)):
        return {}, f"added space-run tokens of widths {sorted(runs)}, not every width from 2 up"
    return runs, None


def fast_encoder_blocker(config: Mapping[str, Any]) -> str | None:
    """Why tiktoken cannot express this tokenizer exactly (structurally), or None if it can.

    `config` is the parsed tokenizer.json (best: `json.loads(tokenizer.to_str())`). Accepted: the shape
    `structure.pipeline_blocker` admits, without BPE dropout, byte fallback, word prefix/suffix or
    ignore_merges; non-special added tokens only if they are runs of 2..N spaces (GPT-NeoX-20B). The
    vocabulary itself is checked when the encoding is built (merge results unique and self-consistent).
    """
    flags = ("dropout", "byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges")
    return pipeline_blocker(config, flags) or _space_runs(config)[1]


@dataclass(frozen=True)
class _FastEncoding:
    """A tiktoken Encoding equivalent to a tokenizer.json, and how to turn its ranks into ids."""

    encoding: Any  # tiktoken.Encoding
    id_of_rank: np.ndarray | None  # None: ranks are the ids
    nfc: bool


def _fast_pattern(max_run: int) -> str:
    """GPT-2's regex, made to treat runs of 2..max_run spaces as matched added tokens (docs/TOKENIZER.md)."""
    if max_run < 2:
        return GPT2_PATTERN
    ws = r"(?:(?!  )\s)+"
    return GPT2_PATTERN.replace(r"\s+(?!\S)|\s+", rf"{ws}(?!\S)|{ws}") + f"| {{2,{max_run}}}"


@functools.lru_cache(maxsize=4)
def _fast_encoding(json_text: str) -> _FastEncoding | str:
    """Build the tiktoken encoding for a tokenizer.json, or say why it cannot be exact. Once per process."""
    try:
        import tiktoken
    except ImportError:
        return "tiktoken is not installed (pip install 'mixprep[fast]')"
    from tokenizers import Tokenizer

    config = json.loads(Tokenizer.from_str(json_text).to_str())  # defaults filled in
    blocker = fast_encoder_blocker(config)
    if blocker:
        return blocker
    model = config["model"]
    vocab: dict[str, int] = model["vocab"]
    chars = _byte_chars()
    byte_of = {c: b for b, c in chars.items()}
    missing = [b for b, c in chars.items() if c not in vocab]
    if missing:
        return f"{len(missing)} of the 256 byte symbols are not in the vocabulary"
    ranked: dict[bytes, int] = {bytes([b]): vocab[c] for b, c in chars.items()}
    results: list[str] = []
    for merge in model["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = left + right
        if token not in vocab or any(c not in byte_of for c in token):
            return f"merge result {token!r} is not a byte-level vocabulary entry"
        key = bytes(byte_of[c] for c in token)
        if key in ranked:
            return f"{token!r} is produced by more than one merge rule"
        ranked[key] = vocab[token]
        results.append(token)
    # Self-consistency: each merge result, encoded alone, is that one token (docs/TOKENIZER.md).
    # Byte-level symbols hold no whitespace, so WhitespaceSplit hands the BPE model one result per word.
    probe = dict(config, normalizer=None, pre_tokenizer={"type": "WhitespaceSplit"}, post_processor=None,
                 decoder=None, added_tokens=[], truncation=None, padding=None)
    bare = Tokenizer.from_str(json.dumps(probe))
    got = bare.encode(" ".join(results), add_special_tokens=False).ids
    want = [vocab[t] for t in results]
    if got != want:
        bad = next((t for t, g in zip(results, bare.encode_batch(results, add_special_tokens=False))
                    if g.ids != [vocab[t]]), "?")
        return f"merge result {bad!r} does not encode to itself, so merge order is not a rank order"
    runs, _ = _space_runs(config)
    ids = [ranked[bytes([b])] for b in range(256)] + [ranked[k] for k in ranked if len(k) > 1]
    monotone = all(a < b for a, b in zip(want, want[1:]))
    if monotone:
        ranks = dict(ranked)
        for width, tid in runs.items():
            ranks[b" " * width] = tid
        id_of_rank = None
    else:  # ranks in merge order, mapped back to ids after encoding
        keys = [bytes([b]) for b in range(256)] + [k for k in ranked if len(k) > 1]
        keys = [k for k in keys if not (set(k) == {32} and len(k) in runs)] + [b" " * w for w in sorted(runs)]
        ranks = {k: r for r, k in enumerate(keys)}
        id_list = [runs[len(k)] if set(k) == {32} and len(k) in runs else ranked[k] for k in keys]
        id_of_rank = np.array(id_list, dtype=np.int64)
    if len(set(ranks.values())) != len(ranks) or len(set(ids)) != len(ids):
        return "token ids are not unique"
    try:
        encoding = tiktoken.Encoding(
            f"mixprep-{hashlib.sha256(json_text.encode()).hexdigest()[:12]}",
            pat_str=_fast_pattern(max(runs, default=0)),
            mergeable_ranks=ranks,
            special_tokens={},
        )
    except Exception as e:  # tiktoken rejects the table
        return f"tiktoken could not build the encoding: {e}"
    nfc = bool(components(config.get("normalizer"), "normalizers"))
    return _FastEncoding(encoding, id_of_rank, nfc)


# Text the fast encoder must encode exactly as `tokenizers` before it is used: contractions, Unicode
# letters, numbers and marks, NFC compositions, whitespace of every kind and runs of spaces.
PROBE_TEXT = "\n".join([
    "Hello, world! It's 3.14159 -- don't you'LL know? We've 1,000,000 REASONS; they'd said 'Sure'.",
    "Ünïcödé: naïve café, e\u0301, A\u030a, \u212b, \u1100\u1161\u11a8, ﬁ, ½, ², ٣٤٥, 東京は日本の首都です。한국어 텍스트.",  # noqa: E501
    "Emoji 👩\u200d👩\u200d👧 🙂 and arrows -> => <|endoftext|> <|padding|> <|not a token|>",
    "def f(x):\n\treturn x  # two spaces\n    four\n" + " " * 24 + "x" + " " * 25 + "y" + " " * 50 + "\n",
    "tabs\t\tand\u00a0nbsp\u00a0 \u3000ideographic\u2000\u2009 \u200b\u180e\ufeff\u0085\u2028\x0b\x1c end  ",
    "\r\n\r\n  \n \n   \t \n" + "=" * 80 + " " + "a" * 300 + " 12345678901234567890 " + "'s 't 're 've 'm 'll 'd",
])


class _PiecesBackend(abc.ABC):
    """A fast backend's shared part: ``encode_one`` over a call's pieces, on ``_pool``'s threads if any."""

    _pool: ThreadPoolExecutor | None

    @abc.abstractmethod
    def encode_one(self, text: str) -> np.ndarray:
        """One piece's ids (each backend's own encoder)."""

    def encode(self, pieces: Sequence[str]) -> list[np.ndarray]:
        if self._pool is None or len(pieces) < 2:
            return [self.encode_one(p) for p in pieces]
        return list(self._pool.map(self.encode_one, pieces))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class _TiktokenBackend(_PiecesBackend):
    """Encodes pieces with the fast encoding; `threads` > 1 encodes pieces of a call concurrently."""

    name = "tiktoken"

    def __init__(self, fast: _FastEncoding, dtype: np.dtype, threads: int):
        # The core's own method raises UnicodeEncodeError on lone surrogates (the public one would
        # replace them); encode_ordinary + np.array is ~1.6x faster than encode_to_numpy (measured).
        self._encode = getattr(fast.encoding, "_core_bpe", fast.encoding).encode_ordinary
        self._id_of_rank = None if fast.id_of_rank is None else fast.id_of_rank.astype(dtype)
        self._nfc = fast.nfc
        self._dtype = dtype
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mixprep-encode") if threads > 1 else None

    def encode_one(self, text: str) -> np.ndarray:
        if self._nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        ranks = self._encode(text)
        if self._id_of_rank is None:
            return np.array(ranks, dtype=self._dtype)
        return self._id_of_rank[np.array(ranks, dtype=np.int64)]

