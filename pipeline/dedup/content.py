"""The exact-duplicate key: a 128-bit XXH3 hash of a document's text after a stated normalization.

Normalizations (``NORMALIZATIONS``):

- ``"nfc_whitespace"`` (the default): Unicode NFC (composed accents: "e" + U+0301 and U+00E9 are one
  text), then every run of whitespace becomes one space and the text is stripped. Whitespace is what
  Python's ``str.split()`` splits on: Unicode White_Space (space, tab, newlines, NBSP, U+2000-U+200A,
  U+3000, ...) plus the ASCII separators U+001C-U+001F. So two copies that differ only in line endings,
  paragraph breaks, doubled spaces or a trailing newline are one text.
- ``"raw"``: the text's own UTF-8 bytes, nothing changed.

Then ``xxh3_128(utf8(normalized))`` (seed 0, the digest's canonical big-endian bytes; the ``xxhash``
package). 128 bits, not 64: the odds that any two of n distinct texts share a key are about
n^2 / 2^(bits+1); at n = 1e9 that is ~2.7% for 64 bits (a wrongly removed document somewhere in a large
corpus, unseen) and ~1.5e-21 for 128 bits. XXH3 is not a cryptographic hash: those odds hold for text
nobody chose in order to collide (docs/DEDUP.md, "Hash"). Its output is fixed by its specification
(stable across processes, platforms and package versions; ``hash()`` is salted per process). Lone
surrogates (readers reject them) are encoded with ``surrogatepass``, so every ``str`` has a key.

A batch of keys is an ``(n, 2)`` uint64 array: column 0 is the digest's first 8 bytes, column 1 the
last 8, both big-endian, so sorting rows (``np.lexsort``) sorts digests bytewise; two uint64 columns
store as-is in the cache's parquet document tables.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Iterator, Sequence

import numpy as np
import xxhash

__all__ = ["NORMALIZATIONS", "DEFAULT_NORMALIZATION", "KEY_BYTES", "normalize", "content_key", "content_keys",
           "key_bytes", "key_hex"]

NORMALIZATIONS = ("nfc_whitespace", "raw")
DEFAULT_NORMALIZATION = "nfc_whitespace"
KEY_BYTES = 16
_digest = xxhash.xxh3_128_digest


def _check(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}: one of {', '.join(NORMALIZATIONS)}")


def normalize(text: str, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """The text the key is computed from.

    >>> normalize("  Cafe\\u0301\\t au\\n\\n lait \\n")
    'Café au lait'
    >>> normalize("  a  b ", "raw")
    '  a  b '
    """
    _check(normalization)
    if normalization == "raw":
        return text
    # is_normalized is a fast scan: most web text is already NFC and skips the copy.
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def content_key(text: str, normalization: str = DEFAULT_NORMALIZATION) -> bytes:
    """The 16-byte content key of one text.

    >>> content_key("a  b\\n") == content_key("a b") == content_key("a b", "raw") != content_key("a  b\\n", "raw")
    True
    """
    return _digest(normalize(text, normalization).encode("utf-8", "surrogatepass"))


# The batch path: ``normalize`` as UTF-8 bytes, with the per-byte work in numpy and C. Per text (in
# Python) only what is rare or cheap: NFC where a non-ASCII text needs it, and the reference path for
# a text holding a non-ASCII space (NBSP, U+2000-U+200A, U+3000, ...: found by ``_has_wide_space``).
# Then a chunk of texts joined by a byte UTF-8 never holds: the ASCII whitespace bytes (\t \n \v \f
# \r, U+001C-U+001F, space; never part of a multi-byte character) that follow another such byte are
# marked with another such byte, and one bytes.translate drops the marks and maps the rest to spaces.
# Same bytes as ``normalize`` either way; tests check every whitespace code point and fuzzed text.
_ASCII_SPACES = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)
_SEP, _DROP = b"\xfe", b"\xff"  # not in any UTF-8 (surrogatepass's included)
_CHUNK_BYTES = 1 << 18  # a chunk's arrays stay in the CPU's cache (4 MB ones ran up to 30% slower)
# Whitespace to str.split() beyond ASCII, by code point up to U+3000, the last one (looked up with
# mode="clip": every higher one is False). A table this small stays in the CPU's cache: 2x a full
# one's speed. A short text is searched with a regex instead: numpy's fixed cost per call is higher.
_WIDE_SPACES = [0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
_WIDE_SPACE = np.zeros(0x3002, dtype=bool)
_WIDE_SPACE[_WIDE_SPACES] = True
_WIDE_SPACE_RE = re.compile("[" + "".join(map(chr, _WIDE_SPACES)) + "]")
_SHORT = 1024  # characters: below it the regex is faster, above it the table


def _has_wide_space(text: str) -> bool:
    if len(text) < _SHORT:
        return _WIDE_SPACE_RE.search(text) is not None
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return bool(_WIDE_SPACE.take(codes, mode="clip").any())


def _utf8(text: str) -> bytes:
    """The text as UTF-8, NFC and its non-ASCII spaces done (its ASCII whitespace is ``_collapsed``'s)."""
    if not text.isascii():
        if not unicodedata.is_normalized("NFC", text):  # a fast scan: most text is NFC already
            text = unicodedata.normalize("NFC", text)
        if _has_wide_space(text):
            text = " ".join(text.split())
    return text.encode("utf-8", "surrogatepass")


def _collapsed(chunk: list[bytes]) -> list[bytes]:
    """Each UTF-8 text with its whitespace runs made one space, stripped: one pass over the chunk."""
    buf = np.frombuffer(_SEP.join(chunk), dtype=np.uint8)
    space = ((buf - np.uint8(9)) <= 4) | ((buf - np.uint8(28)) <= 4)  # 9-13 and 28-32
    repeat = np.zeros_like(space)
    np.logical_and(space[1:], space[:-1], out=repeat[1:])
    marked = buf | -repeat.view(np.uint8)  # -1 as uint8 is 0xFF: a repeated whitespace byte becomes _DROP
    return [t.strip(b" ") for t in marked.tobytes().translate(_ASCII_SPACES, _DROP).split(_SEP)]


def _chunks(items: list[bytes]) -> Iterator[list[bytes]]:
    """Consecutive runs of ``items`` of about ``_CHUNK_BYTES`` each (a longer item alone)."""
    start, size = 0, 0
    for i, item in enumerate(items):
        size += len(item)
        if size >= _CHUNK_BYTES:
            yield items[start:i + 1]
            start, size = i + 1, 0
    if start < len(items):
        yield items[start:]


def content_keys(texts: Iterable[str], normalization: str = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Content keys of many texts as an ``(n, 2)`` uint64 array (rows sort as the digests do).

    The hot path of tokenizing (the cache stores every document's key): docs/DEDUP.md, "Measured"."""
    _check(normalization)
    if normalization == "raw":
        out = [_digest(t.encode("utf-8", "surrogatepass")) for t in texts]
    else:
        out = [_digest(t) for chunk in _chunks([_utf8(t) for t in texts]) for t in _collapsed(chunk)]
    return np.frombuffer(b"".join(out), dtype=">u8").reshape(-1, 2).astype(np.uint64)


def key_bytes(keys: np.ndarray) -> list[bytes]:
    """The 16-byte digests of an ``(n, 2)`` key array (inverse of the packing in ``content_keys``)."""
    arr = np.ascontiguousarray(np.asarray(keys, dtype=np.uint64).reshape(-1, 2).astype(">u8"))
    raw = arr.tobytes()
    return [raw[i:i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]


def key_hex(keys: Sequence | np.ndarray) -> list[str]:
    """Hex digests of an ``(n, 2)`` key array, for manifests and logs."""
    return [k.hex() for k in key_bytes(np.asarray(keys))]
