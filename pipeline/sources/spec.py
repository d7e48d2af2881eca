"""A source as the readers see it: which files, which text field, which subsets."""

from __future__ import annotations

import dataclasses

from .kinds import kind_named, normalize_subset

__all__ = ["SourceSpec"]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Where one source's documents come from and how to read them.

    Args:
      name: the source's name in configs, counters, ids and manifests (e.g. ``refinedweb``).
      kind: a reader kind from ``pipeline.sources.kinds.KINDS``.
      root: the source's folder, relative to the data root (or an absolute URI); doc ids are
        relative to it.
      paths: globs under ``root``; the kind's defaults when empty.
      hub: a Hugging Face hub dataset id (or a local folder in the hub's layout) to list and stream
        instead of ``root``.
      revision: the hub revision.
      include / exclude: subsets to keep / drop (matched case- and space-insensitively).
      text_field: the field holding the text; the kind's default when empty.
      skip_corrupt_files: count and skip structurally broken files instead of stopping the run.
    """

    name: str
    kind: str
    root: str = ""
    paths: tuple[str, ...] = ()
    hub: str | None = None
    revision: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    text_field: str = ""
    skip_corrupt_files: bool = False

    def __post_init__(self):
        kind_named(self.kind)  # fail early on an unknown kind

    @property
    def globs(self) -> tuple[str, ...]:
        return self.paths or kind_named(self.kind).paths

    @property
    def text_key(self) -> str:
        return self.text_field or kind_named(self.kind).text_field

    @property
    def subset_from(self) -> str:
        return kind_named(self.kind).subset_from

    def wants_subset(self, subset: str) -> bool:
        """Whether include/exclude keep this subset."""
        key = normalize_subset(subset)
        if self.include and key not in {normalize_subset(s) for s in self.include}:
            return False
        return key not in {normalize_subset(s) for s in self.exclude}
