"""What distinguishes one corpus from another: where its files are, its text field, its subsets.

Every kind reads the same file formats (chosen by suffix, see ``records``); a kind only supplies
defaults. Adding a source kind is adding one entry to ``KINDS``.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["Kind", "KINDS", "kind_named", "normalize_subset"]


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    paths: tuple[str, ...]  # default globs, relative to the source root
    text_field: str
    # Where a document's subset comes from: "folder" (first directory of the relative path) or a
    # dotted field path inside the record (e.g. "meta.pile_set_name").
    subset_from: str = "folder"
    # Parquet columns carried into Document.meta (JSON records carry all their other fields).
    meta_columns: tuple[str, ...] = ()
    description: str = ""


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "refinedweb",
            paths=("data/*.parquet",),
            text_field="content",
            meta_columns=("url", "dump", "segment"),
            description="Falcon RefinedWeb (tiiuae/falcon-refinedweb): parquet, text in `content`",
        ),
        Kind(
            "c4",
            paths=("en/c4-train.*.json.gz",),
            text_field="text",
            description="C4 (allenai/c4): gzipped JSON lines",
        ),
        Kind(
            "redpajama",
            paths=("*/*.jsonl", "*/**/*.jsonl.zst"),
            text_field="text",
            description="RedPajama-Data-1T: JSON lines (common_crawl in zstd), subset = folder",
        ),
        Kind(
            "pile",
            paths=("train/*.jsonl.zst",),
            text_field="text",
            subset_from="meta.pile_set_name",
            description="The Pile: zstd JSON lines, subset = meta.pile_set_name",
        ),
        Kind(
            "starcoder",
            paths=("*/*.parquet",),
            text_field="content",
            meta_columns=("max_stars_repo_name", "max_stars_repo_path", "id"),
            description="StarCoder data (bigcode/starcoderdata): parquet, one folder per language",
        ),
        Kind(
            "hf_dataset",
            paths=(),
            text_field="text",
            description="a Hugging Face dataset (`dataset: {path, name, split}`): hub id, local hub-layout "
            "folder or save_to_disk folder; its data files for the config and split",
        ),
        Kind(
            "files",
            paths=(),
            text_field="text",
            description="generic JSON lines / parquet (internal data): paths and text field from config",
        ),
    )
}


def kind_named(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown source kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def normalize_subset(name: str) -> str:
    """Subset names match case-, space-, dash- and underscore-insensitively.

    >>> normalize_subset("Stack Exchange") == normalize_subset("StackExchange")
    True
    >>> normalize_subset("Pile-CC")
    'pilecc'
    """
    return re.sub(r"[\s_\-]+", "", name).casefold()
