"""Readers for every source kind: files (local, gs://, s3://) or a Hugging Face hub dataset -> Documents.

    from pipeline.sources import ReadSource, SourceSpec
    spec = SourceSpec(name="pile", kind="pile", root="EleutherAI/pile", exclude=("Pile-CC",))
    result = p | "ReadSource[pile]" >> ReadSource(spec, data_root="samples")
    docs, rejects = result.documents, result.rejects

Adding a source kind: add a ``Kind`` to ``kinds.KINDS`` (default globs, text field, where the subset
comes from); formats are shared and chosen by file suffix.
"""

from .files import (
                    REFUSALS,
                    Listing,
                    RefusedFile,
                    SourceFile,
                    list_source_files,
                    open_source_file,
                    refused_files,
                    source_root,
)
from .kinds import KINDS, Kind, normalize_subset
from .read import DOCUMENTS, READER_VERSION, REJECTS, FileTally, ReadSource, count_refused, count_tally, read_documents
from .spec import DatasetRef, SourceSpec

__all__ = [
    "DOCUMENTS",
    "KINDS",
    "READER_VERSION",
    "REFUSALS",
    "REJECTS",
    "DatasetRef",
    "FileTally",
    "Kind",
    "Listing",
    "ReadSource",
    "RefusedFile",
    "SourceFile",
    "SourceSpec",
    "count_refused",
    "count_tally",
    "list_source_files",
    "normalize_subset",
    "open_source_file",
    "read_documents",
    "refused_files",
    "source_root",
]
