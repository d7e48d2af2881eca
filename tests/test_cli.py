"""The `mixprep` command in-process: a small mixture end to end, progress, counters, and errors."""

import json
import subprocess
import sys

from conftest import BAD, ROOT, SAMPLES, SMALL, mixprep

from pipeline.cli import user_error
from pipeline.console import StderrLines
from pipeline.errors import ConfigError

IN_PROCESS = "--direct_running_mode=in_memory"

# One source whose only file is a truncated zstd stream (tests/data/bad/README.md).
BAD_PILE = (SMALL.replace("root: EleutherAI/pile,", "root: pile, paths: [train/00.jsonl.zst],")
            .replace("  - {name: c4, kind: c4, root: allenai/c4, category: web, weight: 0.6}\n", "")
            .replace("weight: 0.4", "weight: 1.0"))


def test_run_shows_progress_summary_and_counters(built):
    assert "small: " in built["stdout"] and "c4" in built["stdout"]  # the summary table
    assert f"report: {built['out']}/report.md" in built["stdout"]
    err = built["stderr"]
    # Not a terminal: plain lines, the last state of each phase.
    assert "progress: tokenize: 7/7 files" in err and "(c4 4/4; pile 3/3)" in err
    assert "progress: pack     small" in err and "2/2    shards 100.0%" in err
    # Beam's counters as a table, at the end.
    table = err[err.index("namespace"):]
    for row in ("cache:c4", "cache:pile", "mix:c4", "source:pile  excluded_subset"):
        assert row in table
    assert "\x1b[" not in err


def test_beam_wrapped_error_is_one_paragraph(tmp_path):
    mixture = tmp_path / "bad.yaml"
    mixture.write_text(BAD_PILE)
    rc, out, err = mixprep("run", "--mixture", mixture, "--data-root", BAD, "--out", tmp_path / "out",
                           "--cache", tmp_path / "cache", IN_PROCESS)
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("mixprep: error: ") and "00.jsonl.zst: zstd stream is truncated" in last
    assert "skip_corrupt_files" in last and "[while running" not in last
    assert "Traceback" not in err


def test_worker_processes_tracebacks_are_not_shown(tmp_path):
    """The default runner mode: worker processes print tracebacks to the stderr they inherit."""
    mixture = tmp_path / "bad.yaml"
    mixture.write_text(BAD_PILE)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--mixture", str(mixture), "--data-root", BAD,
           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--direct_num_workers=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "During handling" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("mixprep: error: ")
    assert "zstd stream is truncated" in proc.stderr.strip().splitlines()[-1]


def test_traceback_blocks_are_dropped_line_by_line():
    keep = StderrLines(noise=True).keep
    text = (b"INFO start\nTraceback (most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"
            b"pipeline.errors.CorruptFileError: bad\n\nDuring handling of the above exception, another exception "
            b"occurred:\n\nTraceback (most recent call last):\n  File \"y.py\", line 2\nRuntimeError: bad\n\n"
            b"WARNING next\n\nlast")
    assert [line for line in text.split(b"\n") if keep(line)] == [b"INFO start", b"WARNING next", b"", b"last"]


def test_worker_error_text_is_reduced_to_its_paragraph():
    """What the multi-process runner raises: a RuntimeError whose text is the worker's traceback."""
    text = ('Traceback (most recent call last):\n  File "/x/sdk_worker.py", line 1, in f\n'
            'pipeline.errors.CorruptFileError: /d/00.jsonl.zst: zstd stream is truncated. Re-download it.\n\n'
            'During handling of the above exception, another exception occurred:\n\n'
            "RuntimeError: pipeline.errors.CorruptFileError: /d/00.jsonl.zst: zstd stream is truncated. "
            "Re-download it. [while running 'TokenizeSource[pile]/TokenizeFiles']\n")
    assert user_error(RuntimeError(text)) == "/d/00.jsonl.zst: zstd stream is truncated. Re-download it."
    assert user_error(RuntimeError("pipeline.cli.NotAnError: x")) is None
    assert user_error(RuntimeError("numpy.core.SomeError: x")) is None
    try:
        try:
            raise ConfigError("bad key 'x'.")
        except ConfigError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert user_error(wrapped) == "bad key 'x'."


def test_config_errors_and_unknown_errors(tmp_path, monkeypatch):
    rc, _, err = mixprep("run", "--mixture", tmp_path / "missing.yaml")
    assert rc == 2 and err.strip() == f"mixprep: error: mixture file {tmp_path / 'missing.yaml'} does not exist."

    def boom(path):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr("pipeline.outputs.verify.verify_path", boom)
    rc, _, err = mixprep("verify", tmp_path)
    assert rc == 1
    assert err.strip() == "mixprep: unexpected error: ValueError: boom (run again with --debug for the traceback)"
    rc, _, err = mixprep("--debug", "verify", tmp_path)
    assert rc == 1 and "Traceback (most recent call last)" in err


def test_commands_without_a_pipeline_refuse_unknown_flags(tmp_path):
    rc, _, err = mixprep("report", tmp_path, "--direct_num_workers=2")
    assert rc == 2 and "unrecognized arguments for `mixprep report`: --direct_num_workers=2" in err


def test_tokenize_says_what_each_cache_holds(built):
    rc, out, err = mixprep("tokenize", "--mixture", built["mixture"], "--data-root", SAMPLES, "--cache", built["cache"],
                           IN_PROCESS)
    assert rc == 0, err[-2000:]
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert lines["c4"].startswith("4 files (0 refused), 469 documents,") and "(469 read, 0 rejected" in lines["c4"]
    assert lines["pile"].startswith("3 files (0 refused), 201 documents,") and "33 excluded" in lines["pile"]


def test_held_out_splits_from_the_command_line(built, tmp_path):
    out = tmp_path / "small"
    rc, stdout, err = mixprep("run", "--mixture", built["mixture"], "--data-root", SAMPLES, "--out", out,
                              "--cache", built["cache"], "--validation-tokens", "5000", "--test-tokens", "3000",
                              IN_PROCESS)
    assert rc == 0, err[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["validation_tokens"] == 5000 and manifest["config"]["test_tokens"] == 3000
    assert (out / "valid" / "manifest.json").exists() and (out / "test" / "manifest.json").exists()
