"""What a `mixprep` command shows on stderr (pipeline/console.py): progress, summary and real
warnings; Beam's start-up noise only with --verbose."""

import logging
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES

from pipeline.console import BEAM_NOISE, LogFilter, StderrLines

# What local worker processes and the driver print on every start (apache-beam 2.78).
NOISE = [
    "WARNING:root:apitools not found, and bigquery client libraries are not available despite the import",
    "INFO:__main__:Logging handler created.",
    "WARNING:__main__:No semi_persistent_directory found:  User registered objects (e.g. schema, logical type)",
    "WARNING:apache_beam.options.pipeline_options:Discarding unparseable args: ['--pipeline_type_check']",
]


def record(name, level, message):
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_worker_lines_keep_warnings_and_errors_only():
    keep = StderrLines().keep
    assert not [line for line in NOISE if keep(line.encode())]
    for line in ("WARNING:apache_beam.io.filesystem:cannot reach s3://bucket", "ERROR:root:worker crashed",
                 "progress: tokenize: 1/2 files", "mixprep: error: bad"):
        assert keep(line.encode()), line
    assert all(StderrLines(noise=True).keep(line.encode()) for line in NOISE)


def test_driver_log_filter():
    quiet, verbose = LogFilter(), LogFilter(noise=True)
    echo = 'Worker: severity: WARN timestamp { seconds: 1 } message: "No semi_persistent_directory found: x"'
    for r in (record("apache_beam.runners.worker", logging.WARNING, echo),
              record("root", logging.WARNING, NOISE[0].split(":", 2)[2]),
              record("apache_beam.x", logging.INFO, "Worker: severity: INFO timestamp {} message: \"hello\"")):
        assert not quiet.filter(r) and verbose.filter(r)
    real = record("apache_beam.io.aws.s3io", logging.WARNING, "Worker: severity: WARN message: \"retrying GET\"")
    assert quiet.filter(real)
    assert quiet.filter(record("mixprep", logging.INFO, "Discarding unparseable args"))  # never ours
    tb = record("apache_beam.runners.common", logging.ERROR, "Traceback (most recent call last): ...")
    assert not quiet.filter(tb) and not verbose.filter(tb) and LogFilter(tracebacks=True).filter(tb)


def mixprep_run(tmp_path, *flags):
    cmd = [sys.executable, "-m", "pipeline.cli", *flags, "run", "--mixture", f"{ROOT}/mixtures/stage1.yaml",
           "--data-root", SAMPLES, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
           "--total-tokens", "100000", "--shards", "1", "--tokenizer", "small", "--direct_num_workers=2"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr.splitlines()


@pytest.mark.slow
def test_a_run_shows_no_beam_start_up_noise(tmp_path):
    """Two worker processes (the default mode): their start-up and the driver's echoes stay hidden."""
    lines = mixprep_run(tmp_path)
    assert not [line for line in lines if BEAM_NOISE.search(line)]
    assert not [line for line in lines
                if line.startswith(("INFO:", "WARNING:", "DEBUG:")) or "Worker: severity" in line]
    assert any(line.startswith("progress: tokenize") for line in lines)
    # The control: --verbose shows what the default hides, from the driver and from each worker.
    # (Which of the messages a Beam release logs varies: a few of them, from the driver and the workers.)
    verbose = mixprep_run(tmp_path, "--verbose")
    assert sum(bool(BEAM_NOISE.search(line)) for line in verbose) >= 3
