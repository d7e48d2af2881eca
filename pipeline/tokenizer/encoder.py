"""The `Encoder`: documents to id arrays with EOS appended, in calls bounded in bytes.

Each worker builds one `Encoder` from a `LoadedTokenizer` in `DoFn.setup()` and feeds it batches::

    encoder = Encoder(tok)                                 # once per worker
    for batch in batches_by_bytes(docs, text_of=lambda d: d.text):
        for doc, ids in zip(batch, encoder.encode_batch([d.text for d in batch])):
            ...                                            # ids: np.ndarray of tok.dtype, ids[-1] == tok.eos_id

It cuts long texts at safe points (`cuts`) and encodes with the first backend whose gate admits the
tokenizer: gigatoken (`giga`), then tiktoken (`fast`), else `tokenizers`, logging why each faster one
was refused; docs/TOKENIZER.md says why the ids are the same either way. `Encoder.backend` names the
one in use, `Encoder.backend_info()` what a manifest records. MIXPREP_ENCODER (or `backend=`) forces
one: `gigatoken`, `tiktoken` or `tokenizers` (`auto`, the default, tries them in that order).
Threads: both fast backends release the GIL; the encoder uses `threads` threads (default: the
environment variable MIXPREP_ENCODE_THREADS, else 1, right for Beam's local runner, which runs one
worker process per core); a single-process user on an N-core box passes `threads=N`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from ..errors import ConfigError
from .cuts import DEFAULT_CHUNK_CHARS, chunking_blocker, split_at_safe_cuts
from .fast import PROBE_TEXT, _fast_encoding, _TiktokenBackend
from .giga import NeedsReference, _gigatoken_model, _GigatokenBackend, filled_config, probe_texts, real_sample
from .load import LoadedTokenizer

# Bump when a change to `Encoder` could change the ids it produces: it is part of the cache fingerprint.
ENCODER_VERSION = 1

log = logging.getLogger(__package__)  # "pipeline.tokenizer", the logger's name before the package split

T = TypeVar("T")

# Batches are bounded in bytes: each Encoding (tokens, offsets) lives until its batch call returns.
DEFAULT_BATCH_BYTES = 1 << 20
# How much of the first texts the fast encoder also encodes with `tokenizers` to compare (~0.1 s).
DEFAULT_VERIFY_BYTES = 1 << 18
THREADS_ENV = "MIXPREP_ENCODE_THREADS"
# MIXPREP_ENCODER forces a backend (for comparisons, or should a check ever fail); `auto` tries the
# fast ones in this order, fastest first.
BACKEND_ENV = "MIXPREP_ENCODER"
FAST_BACKENDS = ("gigatoken", "tiktoken")
BACKENDS = (*FAST_BACKENDS, "tokenizers")


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8 bytes (O(1) for ASCII strings)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def batches_by_size(items: Iterable[T], size_of: Callable[[T], int], max_size: int) -> Iterator[list[T]]:
    """Group `items` in order into lists whose sizes total at most `max_size`; a larger item goes alone.

    >>> list(batches_by_size([3, 1, 2, 5, 1], int, max_size=4))
    [[3, 1], [2], [5], [1]]
    """
    if max_size <= 0:
        raise ValueError(f"max_size must be positive, got {max_size}")
    batch: list[T] = []
    size = 0
    for item in items:
        n = size_of(item)
        if batch and size + n > max_size:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


def batches_by_bytes(
    items: Iterable[T], text_of: Callable[[T], str], max_bytes: int = DEFAULT_BATCH_BYTES
) -> Iterator[list[T]]:
    """Group `items` in order into lists whose texts total at most `max_bytes` UTF-8 bytes.

    An item larger than `max_bytes` is yielded alone.

    >>> list(batches_by_bytes(["aa", "bb", "c", "dddddd", "e"], str, max_bytes=4))
    [['aa', 'bb'], ['c'], ['dddddd'], ['e']]
    """
    return batches_by_size(items, lambda item: utf8_len(text_of(item)), max_bytes)


def _default_threads() -> int:
    value = os.environ.get(THREADS_ENV, "").strip()
    try:
        return max(1, int(value)) if value else 1
    except ValueError:
        raise ConfigError(f"{THREADS_ENV}={value!r} is not a whole number of threads") from None


def _requested_backend(backend: str | None) -> str:
    """`backend`, else MIXPREP_ENCODER, else "auto"; checked against the known names."""
    value = (backend if backend is not None else os.environ.get(BACKEND_ENV, "")).strip().lower() or "auto"
    if value not in ("auto", *BACKENDS):
        where = "backend" if backend is not None else BACKEND_ENV
        raise ConfigError(f"{where}={value!r} is not an encoder backend: use one of auto, {', '.join(BACKENDS)}")
    return value


def _first_difference(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


_FastBackend = _GigatokenBackend | _TiktokenBackend


@functools.lru_cache(maxsize=None)
def _version(package: str) -> str:
    """An installed package's version, looked up once per process (importlib.metadata scans sys.path
    at each call, ~1.5 ms; every cache part records its encoder's)."""
    from importlib.metadata import version

    return version(package)


class Encoder:
    """Encodes documents to id arrays with EOS appended. Build one per worker (`DoFn.setup`).

    Args:
        tokenizer: from `load_tokenizer`.
        chunk_chars: texts longer than this are cut at safe points into pieces of about this many
            characters, when `chunking_blocker` allows it.
        max_call_bytes: UTF-8 bytes of text passed to one `encode_batch` call (bounds the memory the
            Encodings hold); a single larger piece goes alone.
        fast: use a fast backend (gigatoken, else tiktoken) when its gate admits the tokenizer
            (`backend` tells; docs/TOKENIZER.md says why the ids are the same); False: `tokenizers`.
        backend: force one: "gigatoken", "tiktoken" or "tokenizers" ("auto": the first admitted);
            default MIXPREP_ENCODER, else "auto". A forced fast backend its gate refuses gives
            `tokenizers`, with a warning (never the other fast backend).
        threads: encoding threads; default MIXPREP_ENCODE_THREADS, else 1 (one per Beam worker
            process). A fast backend gets this many; `tokenizers` too (RAYON_NUM_THREADS, set here
            unless it is set already; it only takes effect if this process has not encoded with it yet).
        verify_bytes: UTF-8 bytes of the first texts that a fast backend also encodes with
            `tokenizers` to compare; a difference switches to `tokenizers` and logs an error.
    """

    def __init__(
        self,
        tokenizer: LoadedTokenizer,
        *,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        max_call_bytes: int = DEFAULT_BATCH_BYTES,
        fast: bool = True,
        backend: str | None = None,
        threads: int | None = None,
        verify_bytes: int = DEFAULT_VERIFY_BYTES,
    ):
        if chunk_chars <= 0 or max_call_bytes <= 0:
            raise ValueError("chunk_chars and max_call_bytes must be positive")
        self.threads = _default_threads() if threads is None else max(1, int(threads))
        # Rayon sizes its pool from this when `tokenizers` first encodes in this process: one thread
        # per Beam worker process, as for the fast backends (docs/PERFORMANCE.md has the measurements).
        os.environ.setdefault("RAYON_NUM_THREADS", str(self.threads))
        from tokenizers import Tokenizer

        # A private instance: documents are never truncated or padded, whatever the file says, and
        # a literal "<|endoftext|>" inside a document is text, not a document boundary.
        json_text = tokenizer.json_bytes.decode("utf-8")
        self._tok = Tokenizer.from_str(json_text)
        self._tok.no_truncation()
        self._tok.no_padding()
        self._tok.encode_special_tokens = True
        # encode_batch_fast skips offsets (1.7x faster, measured: docs/PERFORMANCE.md); older tokenizers lack it.
        self._encode_batch = getattr(self._tok, "encode_batch_fast", None) or self._tok.encode_batch
        self.name = tokenizer.name
        self.dtype = tokenizer.dtype
        self.eos_id = tokenizer.eos_id
        self._eos = np.array([tokenizer.eos_id], dtype=tokenizer.dtype)
        self.chunk_chars = chunk_chars
        self.max_call_bytes = max_call_bytes
        self._config = filled_config(json_text)  # read only (shared by the encoders of this process)
        self.chunking_blocker = chunking_blocker(self._config)
        if self.chunking_blocker:
            log.warning(
                "tokenizer %s: long documents are encoded whole (correct, but slower per character and "
                "memory-hungry) because cutting them is not proven for its pipeline: %s",
                tokenizer.name,
                self.chunking_blocker,
            )
        self._verify_left = verify_bytes
        self._fast: _FastBackend | None = None
        self.requested = _requested_backend(backend) if fast else "tokenizers"
        where = "fast=False" if not fast else f"{'backend' if backend is not None else BACKEND_ENV}={self.requested}"
        self._unrequested = f"not requested ({where})"
        # Why each fast backend tried is not used, by name, in the order they were tried.
        self.refused: dict[str, str] = {}
        tried = {"auto": FAST_BACKENDS, "tokenizers": ()}.get(self.requested, (self.requested,))
        for name in tried:
            self._fast, reason = self._admit(name, json_text)
            if self._fast is not None:
                break
            self.refused[name] = reason
            then = "tiktoken" if name != tried[-1] else "`tokenizers`"
            log.warning("tokenizer %s: not encoding with %s: %s; trying %s", self.name, name, reason, then)

    @property
    def backend(self) -> str:
        """"gigatoken", "tiktoken" or "tokenizers": what encodes now (a failed check switches to "tokenizers")."""
        return "tokenizers" if self._fast is None else self._fast.name

    @property
    def fast_blocker(self) -> str | None:
        """Why no fast backend encodes (each refused one's reason), or None when one does."""
        if self._fast is not None:
            return None
        if not self.refused:
            return self._unrequested
        return "; ".join(f"{name}: {why}" for name, why in self.refused.items())

    def backend_info(self) -> dict:
        """What a cache or manifest records about how the ids were made (JSON-ready).

        `backend` and its `version`; `threads`; `requested` (auto or a forced name); `refused`: each
        faster backend not used, and why (a gate's reason, or a run-time difference).
        """
        return {"backend": self.backend, "version": _version(self.backend), "threads": self.threads,
                "requested": self.requested, "refused": dict(self.refused)}

    def pieces(self, text: str) -> list[str]:
        """How `encode_batch` cuts `text`: one piece unless it is long and cutting is proven."""
        if self.chunking_blocker or len(text) <= self.chunk_chars:
            return [text]
        return split_at_safe_cuts(text, self.chunk_chars)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One array of ids per text, each ending with the EOS id; no other special tokens are added."""
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for piece in self.pieces(text):
                pieces.append(piece)
                owners.append(i)
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        start = 0
        for call in batches_by_bytes(pieces, str, self.max_call_bytes):
            for owner, ids in zip(owners[start : start + len(call)], self._encode_pieces(call)):
                parts[owner].append(ids)
            start += len(call)
        return [np.concatenate([*p, self._eos]) for p in parts]

    def close(self) -> None:
        """Stop the fast backend's threads, if any (best effort; `DoFn.teardown`)."""
        if self._fast is not None:
            self._fast.close()

    def _admit(self, name: str, json_text: str) -> tuple[_FastBackend | None, str]:
        """The fast backend `name` if its gate admits this tokenizer, else (None, why not)."""
        if name == "tiktoken":
            built = _fast_encoding(json_text)
            if isinstance(built, str):
                return None, built
            backend: _FastBackend = _TiktokenBackend(built, self.dtype, self.threads)
            checks = [([PROBE_TEXT], "the built-in probe text")]
        else:
            model = _gigatoken_model(json_text)
            if isinstance(model, str):
                return None, model
            backend = _GigatokenBackend(model, self.dtype, self.threads)
            checks = [(probe_texts(self._config), "the built-in probe texts"),
                      (list(real_sample()), "the bundled sample texts")]
        for texts, what in checks:
            reason = self._differs(backend, texts, what)
            if reason:
                backend.close()
                return None, reason
        return backend, ""

    def _encode_slow(self, pieces: Sequence[str]) -> list[np.ndarray]:
        encodings = self._encode_batch(list(pieces), add_special_tokens=False)
        return [np.array(e.ids, dtype=self.dtype) for e in encodings]

    def _encode_pieces(self, pieces: list[str]) -> list[np.ndarray]:
        if self._fast is None:
            return self._encode_slow(pieces)
        if self._verify_left > 0:
            n, size = 0, 0
            while n < len(pieces) and size < self._verify_left:
                size += utf8_len(pieces[n])
                n += 1
            self._verify_left -= size
            reason = self._differs(self._fast, pieces[:n], "a document being encoded")
            if reason:
                log.error("tokenizer %s: %s; switching to `tokenizers` for good", self.name, reason)
                self.refused[self._fast.name] = reason
                self._fast.close()
                self._fast = None
                return self._encode_slow(pieces)
        try:
            return self._fast.encode(pieces)
        except (UnicodeEncodeError, NeedsReference):  # lone surrogates (both fast backends), characters
            pass  # gigatoken classes differently: `tokenizers` encodes those pieces, the fast backend the rest
        out = []
        for piece in pieces:
            try:
                out += self._fast.encode([piece])
            except (UnicodeEncodeError, NeedsReference):
                out += self._encode_slow([piece])
        return out

    def _differs(self, fast: _FastBackend, pieces: Sequence[str], what: str) -> str | None:
        """Why the fast backend's ids for `pieces` differ from `tokenizers`' (None if they do not)."""
        try:
            fast_ids = fast.encode(pieces)
        except (UnicodeEncodeError, NeedsReference):  # `_encode_pieces` leaves these to `tokenizers`
            return None
        for piece, got, want in zip(pieces, fast_ids, self._encode_slow(pieces)):
            if not np.array_equal(got, want):
                at = _first_difference(got, want)
                return (
                    f"{fast.name}'s ids differ from tokenizers' on {what} ({len(piece)} characters, "
                    f"first at token {at}: {got[at:at + 5].tolist()} vs {want[at:at + 5].tolist()})"
                )
        return None
