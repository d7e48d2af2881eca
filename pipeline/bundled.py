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

__all__ = ["BUNDLED_DIRS", "bundled", "mixture_path"]

BUNDLED_DIRS = ("mixtures", "tokenizer", "samples")
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
    names = sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".yaml")) if folder else []
    stem = given[:-5] if given.endswith(".yaml") else given
    if stem in names:
        return os.path.join(folder, stem + ".yaml")
    raise ConfigError(f"no mixture file {given!r} here, and no bundled mixture of that name (bundled: "
                      f"{', '.join(names) or 'none'}). Pass the path of a mixture YAML, e.g. --mixture mixtures/stage1.yaml.")
