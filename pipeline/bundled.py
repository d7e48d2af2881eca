"""The files mixprep ships with: the two StableLM-Alpha-v2 mixtures, the small test tokenizer and
the samples of the five corpora, found the same way from a source checkout and from an install.

In a checkout they are the repository's own ``mixtures/``, ``tokenizer/`` and ``samples/``; an
installed mixprep (``pip install .``) carries copies inside the package, under ``pipeline/_bundled``
(put there by setup.py's build step), in the same layout, so each mixture's relative
``tokenizer: ../tokenizer/tokenizer.json`` holds in both.

    mixprep run --mixture stage1        # = mixtures/stage1.yaml, on the bundled samples
"""

from __future__ import annotations

import os

from .errors import ConfigError

__all__ = ["BUNDLED_DIRS", "PUBLISHED_SIZES", "SMALL_TOKENIZER", "bundled", "mixture_path", "small_tokenizer_path",
           "test_tokenizer_sha256", "tokenizer_argument", "tokenizer_warnings"]

BUNDLED_DIRS = ("mixtures", "tokenizer", "samples")
PUBLISHED_SIZES = "published-sizes.yaml"  # beside the mixtures: what `mixprep stats --published` plans against
SMALL_TOKENIZER = "small"  # `--tokenizer small`: the bundled test tokenizer, wherever mixprep is installed
# The bundled tokenizer is trained on the samples for tests and dry runs: a run this large with it is
# almost surely a production run that forgot `--tokenizer`.
TEST_TOKENIZER_RUN_LIMIT = 100_000_000
_HERE = os.path.dirname(os.path.abspath(__file__))


def bundled(name: str) -> str | None:
    """The folder ``name`` (one of ``BUNDLED_DIRS``): the installed copy, else the checkout's, else None."""
    for folder in (os.path.join(_HERE, "_bundled", name), os.path.join(os.path.dirname(_HERE), name)):
        if os.path.isdir(folder):
            return folder
    return None


def mixture_path(given: str) -> str:
    """A mixture file as given on the command line: a path, or the name of a bundled mixture.

    >>> os.path.basename(mixture_path("stage1"))
    'stage1.yaml'
    """
    if os.path.exists(given) or "/" in given or os.sep in given:
        return given  # a path (load_mixture names it if it does not exist)
    folder = bundled("mixtures")
    names = sorted(n[:-5] for n in os.listdir(folder or ".") if n.endswith(".yaml") and n != PUBLISHED_SIZES) \
        if folder else []
    stem = given[:-5] if given.endswith(".yaml") else given
    if stem in names:
        return os.path.join(folder, stem + ".yaml")
    raise ConfigError(f"no mixture file {given!r} here, and no bundled mixture of that name (bundled: "
                      f"{', '.join(names) or 'none'}). Pass the path of a mixture YAML, e.g. "
                      "--mixture mixtures/stage1.yaml.")


def tokenizer_argument(given: str) -> str:
    """``--tokenizer`` as given: a local path made absolute; a hub id, or ``small``, as it is."""
    return os.path.abspath(given) if os.path.exists(given) else given


def small_tokenizer_path() -> str:
    """The bundled test tokenizer's tokenizer.json (``tokenizer: small`` in a config, ``--tokenizer small``)."""
    return os.path.join(bundled("tokenizer") or "tokenizer", "tokenizer.json")


def test_tokenizer_sha256() -> str | None:
    """The bundled test tokenizer's sha256 (None when it is not there)."""
    import hashlib

    path = small_tokenizer_path()
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tokenizer_warnings(named: str, used: str, sha256: str, total_tokens: int) -> list[str]:
    """One line for each thing a user should know about the tokenizer a run uses.

    ``named``: the tokenizer the mixture file names ("" when it is the one used).

    >>> tokenizer_warnings("EleutherAI/gpt-neox-20b", "tok.json", "0" * 64, 10**6)
    ['tokenizing with tok.json, not the tokenizer the mixture names (EleutherAI/gpt-neox-20b)']
    """
    out = []
    if named and named != used:
        out.append(f"tokenizing with {used}, not the tokenizer the mixture names ({named})")
    if sha256 == test_tokenizer_sha256() and total_tokens > TEST_TOKENIZER_RUN_LIMIT:
        out.append(f"the bundled test tokenizer (trained on the samples, for tests and dry runs) for a "
                   f"{total_tokens:,}-token mixture: pass --tokenizer with your production tokenizer.json")
    return out
