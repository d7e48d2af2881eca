"""Shim so Beam's ``--setup_file ./setup.py`` can ship this package to remote workers.

All metadata lives in setup.cfg.
"""
import setuptools

setuptools.setup()
