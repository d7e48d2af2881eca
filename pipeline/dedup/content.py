"""The exact-duplicate key: a 128-bit blake2b hash of a document's text after a stated normalization.

Normalizations (``NORMALIZATIONS``):

- ``"nfc_whitespace"`` (the default): Unicode NFC (composed accents: "e" + U+0301 and U+00E9 are one
  text), then every run of whitespace becomes one space and the text is stripped. Whitespace is what
  Python's ``str.split()`` splits on: Unicode White_Space (space, tab, newlines, NBSP, U+2000-U+200A,
  U+3000, ...) plus the ASCII separators U+001C-U+001F. So two copies that differ only in line endings,
  paragraph breaks, doubled spaces or a trailing newline are one text.
- ``"raw"``: the text's own UTF-8 bytes, nothing changed.

Then ``blake2b(utf8(normalized), digest_size=16, person=b"mixprep-content")``. 128 bits, not 64: the
odds that any two of n distinct texts share a key are about n^2 / 2^(bits+1); at n = 1e9 that is
~2.7% for 64 bits (a wrongly removed document somewhere in a large corpus, unseen) and ~1.5e-21 for
128 bits. blake2b is stable across processes, platforms and Python versions (``hash()`` is salted per
process). Lone surrogates (readers reject them) are encoded with ``surrogatepass``, so every ``str``
has a key.

A batch of keys is an ``(n, 2)`` uint64 array: column 0 is the digest's first 8 bytes, column 1 the
last 8, both big-endian, so sorting rows (``np.lexsort``) sorts digests bytewise; two uint64 columns
store as-is in the cache's parquet document tables.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

__all__ = ["NORMALIZATIONS", "DEFAULT_NORMALIZATION", "KEY_BYTES", "normalize", "content_key", "content_keys",
           "key_bytes", "key_hex"]

NORMALIZATIONS = ("nfc_whitespace", "raw")
DEFAULT_NORMALIZATION = "nfc_whitespace"
KEY_BYTES = 16
_PERSON = b"mixprep-content"  # domain separation from hashing.doc_hash (also blake2b)


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
    data = normalize(text, normalization).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=KEY_BYTES, person=_PERSON).digest()


# Most texts are normalized as UTF-8 bytes, where C does the work: a byte table maps the ASCII
# whitespace to spaces, a regex with a literal prefix collapses runs of them (UTF-8 never holds an
# ASCII byte inside another character). A text holding one of the other Unicode spaces (NBSP, U+2000-
# U+200A, U+3000, ...: found by one regex scan) takes ``normalize``'s str.split path. Same bytes as
# ``normalize`` either way; tests check every whitespace code point and fuzzed text.
_ASCII_SPACES = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)
_SPACE_RUN = re.compile(rb"  +")
_WIDE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _normalized_bytes(text: str) -> bytes:
    """``normalize(text, "nfc_whitespace")`` as UTF-8 (about 2x faster than it)."""
    if not text.isascii():
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        if _WIDE_SPACE.search(text):
            return " ".join(text.split()).encode("utf-8", "surrogatepass")
    return _SPACE_RUN.sub(b" ", text.encode("utf-8", "surrogatepass").translate(_ASCII_SPACES)).strip(b" ")


def content_keys(texts: Iterable[str], normalization: str = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Content keys of many texts as an ``(n, 2)`` uint64 array (rows sort as the digests do).

    The hot path of tokenizing (the cache stores every document's key): docs/DEDUP.md, "Measured"."""
    _check(normalization)
    proto = hashlib.blake2b(digest_size=KEY_BYTES, person=_PERSON)
    out = bytearray()
    raw = normalization == "raw"
    for text in texts:
        h = proto.copy()  # one hasher state copied per text, no per-text checks
        h.update(text.encode("utf-8", "surrogatepass") if raw else _normalized_bytes(text))
        out += h.digest()
    return np.frombuffer(bytes(out), dtype=">u8").reshape(-1, 2).astype(np.uint64)


def key_bytes(keys: np.ndarray) -> list[bytes]:
    """The 16-byte digests of an ``(n, 2)`` key array (inverse of the packing in ``content_keys``)."""
    arr = np.ascontiguousarray(np.asarray(keys, dtype=np.uint64).reshape(-1, 2).astype(">u8"))
    raw = arr.tobytes()
    return [raw[i:i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]


def key_hex(keys: Sequence | np.ndarray) -> list[str]:
    """Hex digests of an ``(n, 2)`` key array, for manifests and logs."""
    return [k.hex() for k in key_bytes(np.asarray(keys))]
