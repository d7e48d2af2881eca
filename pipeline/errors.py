"""The errors mixprep raises for problems a user can fix.

Each carries one clear paragraph: what is wrong, where (file, key), and what to do. The command line
prints the message alone (no traceback unless ``--debug``).
"""

__all__ = ["MixprepError", "ConfigError", "SourceError", "CorruptFileError", "FormatError", "OutputError"]


class MixprepError(Exception):
    """Base class: a problem in the user's input or environment, not a bug in mixprep."""


class ConfigError(MixprepError):
    """A mixture config is invalid (unknown key, bad value, weights that do not sum, ...)."""


class SourceError(MixprepError):
    """A source cannot be listed or read as configured (no files match, hub unreachable, ...)."""


class CorruptFileError(SourceError):
    """An input file is structurally broken (truncated stream, unreadable parquet, missing column)."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}. The file is damaged or not in the expected format: re-download it, "
            "remove it from the source's paths, or set `skip_corrupt_files: true` on the source to "
            "count and skip such files."
        )


class FormatError(MixprepError):
    """A token file (.bin/.idx, manifest) does not match the format it claims."""


class OutputError(MixprepError):
    """An output (cache, shard, manifest) cannot be written: no space, not writable, not a folder."""

    def __init__(self, path: str, error: BaseException):
        self.path = path
        reason = getattr(error, "strerror", None) or str(error)
        super().__init__(
            f"cannot write {path}: {reason}. Check that the output location exists, is writable and has "
            "free space, then rerun the same command: finished cache parts and shards are kept, and "
            "nothing incomplete is ever left under a final name."
        )
