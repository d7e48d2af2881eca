"""The records that flow out of the readers: a Document, or a Reject that says why not.

``doc_id`` is stable across runs and machines: the file's path relative to the source root, then
``:LINE`` (1-based, as editors count) for line-oriented files or ``#ROW`` (0-based, as pyarrow counts)
for parquet. Every keep/repeat/order decision later derives from it.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

__all__ = ["Document", "Reject", "REJECT_REASONS"]

# Why a record can be rejected; each reason is also the suffix of a ``rejected_<reason>`` counter.
REJECT_REASONS = (
    "malformed_json",  # the line does not parse as a JSON object
    "invalid_utf8",  # bytes that are not UTF-8 (or lone surrogates)
    "missing_text",  # no text field, or it is null
    "wrong_type",  # the text field is not a string
    "empty_text",  # empty or whitespace-only text
    "missing_subset",  # the field that names the subset is absent (The Pile's meta.pile_set_name)
    "blank_line",  # an empty line inside a JSON-lines file
)


@dataclasses.dataclass(frozen=True)
class Document:
    """One document as read, before tokenizing."""

    source: str
    subset: str
    doc_id: str
    text: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class Reject:
    """A record that could not become a Document, with everything needed to find and inspect it."""

    source: str
    file: str  # source-relative path
    position: str  # "LINE" (1-based) or "#ROW" (0-based), as in doc ids
    reason: str
    detail: str = ""
    raw: bytes | None = None  # the record exactly as read, when there is one

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; the raw record is kept as text when it is UTF-8, else as base64."""
        out: dict[str, Any] = {
            "source": self.source,
            "file": self.file,
            "position": self.position,
            "reason": self.reason,
            "detail": self.detail,
        }
        if self.raw is not None:
            try:
                out["raw"] = self.raw.decode("utf-8")
            except UnicodeDecodeError:
                out["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return out
