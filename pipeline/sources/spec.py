"""A source as the readers see it: which files, which text field, which subsets; and one input file of it."""

from __future__ import annotations

import dataclasses

from .kinds import kind_named, normalize_subset

__all__ = ["DatasetRef", "SourceSpec"]


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A Hugging Face dataset a source reads (kind ``hf_dataset``; ``hf_datasets.py`` lists and reads it).

    ``path`` is a hub id, a local folder in the hub's layout (data files, optionally a README.md whose
    ``configs:`` header maps configs and splits to files), or a folder written by ``save_to_disk``
    (found by its ``state.json`` or ``dataset_dict.json``; it may also be on gs:// or s3://).
    """

    path: str = dataclasses.field(metadata={"help": "hub id (org/name), or a folder: relative to the data root "
                                                    "unless absolute or a URI"})
    name: str | None = dataclasses.field(default=None, metadata={"help": "the dataset config (hub datasets; "
                                                                         "default: the dataset's default config)"})
    split: str = dataclasses.field(default="train", metadata={"help": "the split to read"})
    revision: str | None = dataclasses.field(default=None, metadata={"help": "hub branch, tag or commit "
                                                                             "(default: the main branch)"})


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
      skip_corrupt_files: count and skip structurally broken files, and record the matched paths that
        are no file to read (``files.REFUSALS``) as refused, instead of stopping the run.
      dataset: the Hugging Face dataset a source of kind ``hf_dataset`` reads (instead of ``root``,
        ``paths`` and ``hub``): its data files for one config and split are the source's files.
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
    dataset: DatasetRef | None = None

    def __post_init__(self):
        kind_named(self.kind)  # fail early on an unknown kind
        if (self.kind == "hf_dataset") != (self.dataset is not None):
            raise ValueError(f"source {self.name!r}: kind 'hf_dataset' and `dataset` go together")

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


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One input file: where to open it, its id-forming relative path, size and folder subset."""

    path: str
    rel: str
    size: int
    folder: str  # first directory of ``rel`` ("" for files at the root)
