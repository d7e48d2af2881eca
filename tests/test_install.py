"""mixprep as users install it: the lock `make` installs from, and `pip install .` away from the checkout."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import deps  # noqa: E402  (scripts/deps.py: `make lock`, `make check-newest`)


def test_the_lock_pins_every_declared_package():
    pins = deps.read_lock()
    assert set(deps.declared()) <= set(pins)
    assert all(v and v[0].isdigit() for v in pins.values())


def test_this_venv_holds_the_locked_versions():
    """What `make` installed is what the lock says (packages added by hand since are not checked)."""
    here = deps.installed(sys.executable)
    assert [d for d in deps.differences(deps.read_lock(), here) if d[1]] == []


@pytest.mark.slow
def test_pip_install_outside_the_checkout_runs_a_bundled_mixture(tmp_path):
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", deps.LOCK, ROOT], check=True, timeout=900)

    def mixprep(*args):
        return subprocess.run([str(venv / "bin" / "mixprep"), *args], cwd=elsewhere, capture_output=True, text=True,
                              timeout=600)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pipeline; print(pipeline.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    run = mixprep("run", "--mixture", "stage1", "--tokenizer", "small", "--out", "out/stage1",
                  "--total-tokens", "200000", "--shards", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "the bundled samples" in run.stderr and "site-packages" in run.stderr
    assert mixprep("verify", "out/stage1").returncode == 0
    assert (elsewhere / "out" / "stage1" / "manifest.json").exists()
    wrong = mixprep("run", "--mixture", "stage3")
    assert wrong.returncode == 2 and "bundled: stage1, stage2" in wrong.stderr


def test_check_newest_blames_one_release_in_one_line():
    decl = {"apache-beam": "runtime", "pytest": "test"}
    diffs = [("apache-beam", "2.78.0", "2.79.0"), ("grpcio", "1.70.0", "1.71.0"), ("pytest", "9.2.0", "9.3.0"),
             ("tqdm", "", "4.1.0")]
    # Runtime dependencies are put back first, then test tools, then the rest; a new package cannot be.
    assert [d[0] for d in deps.bisect_order(diffs, decl)] == ["apache-beam", "pytest", "grpcio"]
    status, line = deps.verdict(diffs[0], decl, diffs)
    assert status == 1 and line.startswith("check-newest: FAILED: apache-beam 2.79.0 (locked 2.78.0) breaks")
    status, line = deps.verdict(diffs[2], decl, diffs)
    assert status == 0 and "WARNING: pytest 9.3.0" in line
    status, line = deps.verdict(None, decl, diffs)
    assert status == 1 and "no single one" in line and "\n" not in line
