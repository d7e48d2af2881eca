"""Where a long text may be cut without changing its ids, and for which tokenizers that is proven.

The `Encoder` cuts a text longer than `chunk_chars` characters right before an ASCII space that
follows a non-whitespace character (`"...X| ..."`), encodes the pieces and concatenates their ids.
For a tokenizer that `chunking_blocker` admits, these are exactly the ids of the whole text:
docs/TOKENIZER.md ("Cutting long documents") has the argument, stage by stage.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from .structure import looks_past, pipeline_blocker

DEFAULT_CHUNK_CHARS = 1 << 16

# Characters treated as whitespace when checking a cut: str.isspace() (which covers Unicode
# White_Space, the regex engine's \s) plus characters some Unicode versions classed as spaces.
_EXTRA_SPACES = "\u180e\u200b\ufeff"
# The same rule as `is_safe_cut`, for scanning (Python's \s is str.isspace(); checked in the tests).
_SAFE_CUT_RE = re.compile(rf"(?<=[^\s{_EXTRA_SPACES}]) ")


def _is_space(ch: str) -> bool:
    return ch.isspace() or ch in _EXTRA_SPACES


def is_safe_cut(text: str, i: int) -> bool:
    """True if `text[i]` is an ASCII space that follows a non-whitespace character.

    For tokenizers that pass `chunking_blocker`, encoding `text[:i]` and `text[i:]` separately then
    gives the ids of `text` (docs/TOKENIZER.md says why).

    >>> [i for i in range(9) if is_safe_cut("a b  c  d", i)]
    [1, 3, 6]
    """
    return 0 < i < len(text) and text[i] == " " and not _is_space(text[i - 1])


def safe_cut_points(text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[int]:
    """Cut positions that split `text` into pieces of at least `chunk_chars` characters (the last may be shorter).

    Each piece ends at the first safe cut at or after `chunk_chars` characters from its start; with no
    such cut, the rest of the text is one piece. One forward scan: linear in `len(text)`.

    >>> safe_cut_points("one two three four", chunk_chars=4)
    [7, 13]
    """
    if chunk_chars <= 0:
        raise ValueError(f"chunk_chars must be positive, got {chunk_chars}")
    cuts: list[int] = []
    pos = 0
    while len(text) - pos > chunk_chars:
        m = _SAFE_CUT_RE.search(text, pos + chunk_chars)
        if m is None:
            break
        pos = m.start()
        cuts.append(pos)
    return cuts


def split_at_safe_cuts(text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """`text` cut at `safe_cut_points`; the pieces join back to `text`."""
    bounds = [0, *safe_cut_points(text, chunk_chars), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def chunking_blocker(config: Mapping[str, Any]) -> str | None:
    """Why cutting long texts at `is_safe_cut` points is not proven for this tokenizer, or None if it is.

    `config` is the parsed tokenizer.json (best: `json.loads(tokenizer.to_str())`, which fills in
    defaults). Proven: the shape `structure.pipeline_blocker` admits (BPE without dropout), and added
    tokens without lstrip/rstrip/single_word whose content (raw and NFC) has no non-whitespace
    character directly followed by a space.
    """
    blocker = pipeline_blocker(config)
    if blocker:
        return blocker
    for tok in config.get("added_tokens") or []:
        content = tok.get("content", "")
        flag = looks_past(tok)
        if flag:
            return f"added token {content!r} has {flag}=true"
        for form in {content, unicodedata.normalize("NFC", content)}:
            if any(b == " " and not _is_space(a) for a, b in zip(form, form[1:])):
                return f"added token {content!r} contains a space after a non-whitespace character"
    return None
