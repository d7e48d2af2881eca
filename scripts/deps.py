#!/usr/bin/env python3
"""mixprep's dependencies: the lock `make` installs from, and a check against the newest releases.

    python scripts/deps.py lock                 # `make lock`: requirements-lock.txt from a fresh venv
    python scripts/deps.py check-newest         # `make check-newest`: the smoke set on the newest releases

setup.cfg keeps honest ranges for people who `pip install` mixprep into their own environment; the
lock pins every package (transitive ones too) to the versions `make test` ran on, so a fresh clone
installs exactly what was tested. `lock` resolves the ranges afresh (the newest releases they allow)
in a new venv and writes what it installed.

`check-newest` builds a venv from the ranges alone, as a user's `pip install` would today, says
which releases differ from the lock, and runs the smoke set (the pipeline-construction tests, both
dry runs, `mixprep verify`). When the smoke set fails it looks for the release to blame: with the
newest venv it puts back one differing package at a time at its locked version and runs the smoke
set again. The verdict is one line. Policy: a break fails (exit 1) when what breaks reaches users of
`pip install mixprep` (a runtime dependency, or no single culprit found); a break by a test-only tool
(pytest, moto, hypothesis) only warns (exit 0): users never install those through us.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, "requirements-lock.txt")
EXTRAS = "aws,bench,dask,fast,report,test,trainers"  # what `make` installs: all but gcp (Dataflow, on demand)
# The newest-release venv leaves out `trainers`: torch's newest release for this machine is a CUDA
# build of several GB (a download each CI run); the torch checks run on the locked torch.
NEWEST_EXTRAS = "aws,bench,dask,fast,report,test"
# Pinned when the lock is made: the CPU build of torch these machines have on disk (any newer one pip
# could pick here is a multi-GB CUDA build). Elsewhere `torch==2.13.0` takes that release's default build.
LOCK_PINS = ("torch==2.13.0",)
TEST_ONLY = "test"  # the extra whose packages users of `pip install mixprep` never get
SMOKE_TESTS = ["tests/test_type_checks.py", "tests/test_dataflow.py", "tests/test_runners.py", "tests/test_console.py"]
# The Makefile's dry runs (make stage1-mixture / stage2-mixture), with its sizes.
DRY_RUNS = [("stage1", 1_000_000), ("stage2", 2_000_000)]
MAX_BISECT = 12  # packages tried one at a time when looking for the release to blame


def canonical(name: str) -> str:
    """PEP 503 names: ``Foo_bar`` and ``foo-bar`` are one package.

    >>> canonical("PyYAML"), canonical("huggingface_hub")
    ('pyyaml', 'huggingface-hub')
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(setup_cfg: str = os.path.join(ROOT, "setup.cfg")) -> dict[str, str]:
    """Every package setup.cfg names, and where: ``runtime`` (install_requires and the user-facing
    extras) or ``test`` (the test extra)."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    out: dict[str, str] = {}
    groups = [("runtime", cfg["options"]["install_requires"])]
    extras = cfg["options.extras_require"]
    groups += [(TEST_ONLY if extra == TEST_ONLY else "runtime", reqs) for extra, reqs in extras.items()]
    for where, text in groups:
        for line in text.strip().splitlines():
            name = canonical(re.split(r"[\s\[<>=!~;]", line.strip(), maxsplit=1)[0])
            if name and out.get(name) != "runtime":
                out[name] = where
    return out


def read_lock(path: str = LOCK) -> dict[str, str]:
    """{package: version} of a lock file (``name==version`` lines; comments ignored)."""
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[canonical(name)] = version.strip()
    return pins


def installed(python: str) -> dict[str, str]:
    """{package: version} of what a venv holds (pip and the tools included, mixprep itself not).

    Local version labels are dropped (``2.13.0+cpu`` -> ``2.13.0``): a pin without one accepts any
    build of that release, so the lock holds wherever the package comes from.
    """
    out = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            if canonical(name) != "mixprep":
                pins[canonical(name)] = version.strip().split("+", 1)[0]
    return pins


def differences(locked: dict[str, str], newest: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, locked, newest) for each package whose version differs ("" where one side lacks it).

    >>> differences({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "1"})
    [('b', '2', '3'), ('c', '', '1')]
    """
    names = sorted(set(locked) | set(newest))
    return [(n, locked.get(n, ""), newest.get(n, "")) for n in names if locked.get(n) != newest.get(n)]


def describe(diffs: list[tuple[str, str, str]]) -> str:
    """One line: each differing package with both versions.

    >>> describe([("apache-beam", "2.78.0", "2.79.0"), ("tqdm", "", "4.1")])
    'apache-beam 2.79.0 (locked 2.78.0), tqdm 4.1 (not in the lock)'
    """
    return ", ".join(f"{n} {new or 'removed'} ({'locked ' + old if old else 'not in the lock'})"
                     for n, old, new in diffs)


def bisect_order(diffs: list[tuple[str, str, str]], decl: dict[str, str]) -> list[tuple[str, str, str]]:
    """The packages to put back first: runtime dependencies, then test tools, then the rest (transitive)."""
    rank = {"runtime": 0, TEST_ONLY: 1}
    return sorted((d for d in diffs if d[1]), key=lambda d: (rank.get(decl.get(d[0], ""), 2), d[0]))[:MAX_BISECT]


def verdict(culprit: tuple[str, str, str] | None, decl: dict[str, str], diffs) -> tuple[int, str]:
    """(exit status, the one line CI shows) for a smoke set that failed on the newest releases.

    >>> status, line = verdict(("pytest", "9.2.0", "9.3.0"), {"pytest": "test"}, [])
    >>> status
    0
    >>> print(line)
    check-newest: WARNING: pytest 9.3.0 (locked 9.2.0) breaks the smoke set; a test-only tool: users are not affected
    """
    if culprit is None:
        return 1, f"check-newest: FAILED on the newest releases ({describe(diffs)}); no single one is to blame"
    name, old, new = culprit
    if decl.get(name) == TEST_ONLY:
        return 0, (f"check-newest: WARNING: {name} {new} (locked {old}) breaks the smoke set; "
                   "a test-only tool: users are not affected")
    return 1, (f"check-newest: FAILED: {name} {new} (locked {old}) breaks mixprep; fix it, or exclude the release "
               f"in setup.cfg (e.g. {name}!={new})")


# --- building venvs and running the smoke set -----------------------------------------------

def make_venv(path: str, extras: str, constraints: str | None = None, pins: tuple[str, ...] = ()) -> str:
    """A fresh venv at ``path`` with mixprep (editable), its ``extras`` and ``pins``; returns its python."""
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    python = os.path.join(path, "bin", "python")
    pin = ["-c", constraints] if constraints else []
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pin]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{extras}]", *pins], check=True, cwd=ROOT)
    return python


def smoke(python: str, log) -> str | None:
    """Run the smoke set with ``python``'s venv; None when it passes, else what failed first."""
    bin_ = os.path.dirname(python)
    with tempfile.TemporaryDirectory(prefix="mixprep-smoke-") as out:
        pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE_TESTS]
        steps = [("pipeline-construction tests", pytest)]
        for stage, tokens in DRY_RUNS:
            folder = os.path.join(out, stage)
            steps.append((f"{stage} dry run", [os.path.join(bin_, "mixprep"), "run",
                                               "--mixture", f"mixtures/{stage}.yaml",
                                               "--out", folder, "--cache", os.path.join(out, "cache"),
                                               "--total-tokens", str(tokens), "--shards", "4", "--tokenizer", "small"]))
            steps.append((f"mixprep verify {stage}", [os.path.join(bin_, "mixprep"), "verify", folder]))
        for what, cmd in steps:
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            log(f"  {what}: {'ok' if proc.returncode == 0 else 'FAILED'} ({time.monotonic() - t0:.0f} s)")
            if proc.returncode != 0:
                log("\n".join("    " + line for line in (proc.stdout + proc.stderr).strip().splitlines()[-25:]))
                return what
    return None


def find_culprit(python: str, newest: dict[str, str], diffs, decl, log) -> tuple[str, str, str] | None:
    """The differing package whose locked version, put back alone, makes the smoke set pass."""
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for name, old, new in bisect_order(diffs, decl):
        log(f"with {name} {old} (locked) instead of {new}:")
        if subprocess.run([*pip, f"{name}=={old}"]).returncode != 0:
            log("  cannot install it beside the newest releases of the rest; next")
            continue
        passed = smoke(python, log) is None
        subprocess.run([*pip, *(f"{n}=={v}" for n, v in newest.items())])  # back to the newest set
        if passed:
            return name, old, new
    return None


def check_newest(venv: str, lock_file: str = LOCK) -> int:
    def log(line: str) -> None:
        print(line, flush=True)

    decl = declared()
    log(f"check-newest: a venv from setup.cfg's ranges alone ({venv})")
    python = make_venv(venv, NEWEST_EXTRAS)
    newest = installed(python)
    locked = {n: v for n, v in read_lock(lock_file).items() if n in newest}  # not the extras left out
    diffs = differences(locked, newest)
    log(f"check-newest: differs from the lock: {describe(diffs)}" if diffs else
        "check-newest: the newest releases are the locked ones")
    failed = smoke(python, log)
    if failed is None:
        log(f"check-newest: passed on the newest releases{' (' + describe(diffs) + ')' if diffs else ''}")
        return 0
    if not diffs:
        log(f"check-newest: FAILED: the {failed} fails on the locked versions too (not a new release)")
        return 1
    log(f"check-newest: {failed} failed; looking for the release to blame")
    status, line = verdict(find_culprit(python, newest, diffs, decl, log), decl, diffs)
    log(line)
    return status


def lock(venv: str, out: str) -> int:
    python = make_venv(venv, EXTRAS, pins=LOCK_PINS)
    pins = installed(python)
    missing = sorted(set(declared()) - set(pins))
    if missing:
        print(f"lock: {', '.join(missing)} declared in setup.cfg but not installed", file=sys.stderr)
        return 1
    header = [
        "# mixprep's tested dependency set: every package a fresh venv holds after",
        f"#   pip install -e '.[{EXTRAS}]' {' '.join(LOCK_PINS)}",
        "# at the version `make test` runs on. `make` installs with it as constraints (pip -c); `make lock`",
        "# writes it again from setup.cfg's ranges (the newest releases they allow), `make check-newest`",
        "# checks those newest releases against it. setup.cfg keeps the ranges for `pip install mixprep`.",
        f"# Made with Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{datetime.date.today().isoformat()}.",
    ]
    with open(out, "w") as f:
        f.write("\n".join(header) + "\n" + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    print(f"lock: {len(pins)} packages -> {os.path.relpath(out, ROOT)}")
    shutil.rmtree(venv, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    lk = sub.add_parser("lock", help="write requirements-lock.txt from setup.cfg's ranges")
    lk.add_argument("--venv", default=os.path.join(ROOT, ".venv-lock"))
    lk.add_argument("--out", default=LOCK)
    cn = sub.add_parser("check-newest", help="the smoke set on the newest releases setup.cfg allows")
    cn.add_argument("--venv", default=os.path.join(ROOT, ".venv-newest"))
    cn.add_argument("--lock", default=LOCK, help="the lock to compare with (default: requirements-lock.txt)")
    args = p.parse_args(argv)
    if args.command == "lock":
        return lock(args.venv, args.out)
    return check_newest(args.venv, args.lock)


if __name__ == "__main__":
    sys.exit(main())
