"""Build step, and the shim Beam's ``--setup_file ./setup.py`` ships this package to remote workers with.

All metadata lives in setup.cfg. The one thing done here: an installed mixprep carries the bundled
mixtures, small tokenizer and samples inside the package (``pipeline/_bundled``, see
pipeline/bundled.py), so ``mixprep run --mixture stage1`` works outside a checkout too.
"""
import os
import shutil

import setuptools
from setuptools.command.build_py import build_py

BUNDLED_DIRS = ("mixtures", "tokenizer", "samples")  # = pipeline.bundled.BUNDLED_DIRS
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithBundledFiles(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install finds them in the checkout
            return
        for name in BUNDLED_DIRS:
            src, dst = os.path.join(HERE, name), os.path.join(self.build_lib, "pipeline", "_bundled", name)
            if os.path.isdir(src):
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))


setuptools.setup(cmdclass={"build_py": BuildWithBundledFiles})
