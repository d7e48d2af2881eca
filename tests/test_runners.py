"""Local runs (pipeline/runners.py): Beam's FnApiRunner by name, never Prism fetched at run time; a
worker process per core, each with its malloc arenas and jemalloc. Dask by name (tests/test_dask.py
runs it on a cluster)."""

import logging
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline.errors import ConfigError
from pipeline.runners import (
    DASK_RUNNER,
    JEMALLOC,
    LOCAL_RUNNER,
    WORKER_ALLOCATOR_ENV,
    WORKER_MALLOC,
    beam_defaults,
    one_job,
    worker_allocator,
    worker_environment,
)


def runner_of(args):
    return PipelineOptions(beam_defaults(args)).view_as(StandardOptions).runner


def test_direct_runner_or_none_means_the_local_runner():
    for args in ([], ["--runner=DirectRunner"], ["--runner", "DirectRunner"], ["--runner=direct"]):
        out = beam_defaults(args)
        assert runner_of(args) == LOCAL_RUNNER, args
        assert "--direct_running_mode=multi_processing" in out and "DirectRunner" not in out


def test_other_runners_are_left_alone():
    for name in ("DataflowRunner", "PrismRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        args = beam_defaults([f"--runner={name}"])
        assert runner_of([f"--runner={name}"]) == name
        assert not any(a.startswith("--direct_running_mode") for a in args)


def test_a_local_run_takes_the_fn_api_runner(caplog):
    options = PipelineOptions([f"--runner={LOCAL_RUNNER}", "--direct_running_mode=in_memory"])
    with caplog.at_level(logging.INFO, logger="apache_beam"):
        with beam.Pipeline(options=options) as p:
            assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    assert type(p.result).__module__.startswith("apache_beam.runners.portability.fn_api_runner")
    assert not [r for r in caplog.records if "Prism" in r.getMessage()]


def test_local_worker_processes_get_a_malloc_arena_per_thread_and_jemalloc(tmp_path, monkeypatch):
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4", WORKER_ALLOCATOR_ENV: "glibc"}
    worker_environment(env)
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4", WORKER_ALLOCATOR_ENV: "glibc"}  # the user's own
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(WORKER_ALLOCATOR_ENV, raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    worker_environment()  # what `mixprep run` does before a multi-process local run
    assert "arena_max=64" in os.environ["GLIBC_TUNABLES"]
    allocator = worker_allocator()  # `make` puts jemalloc in the venv on Debian/Ubuntu
    assert os.environ.get("LD_PRELOAD") == allocator
    seen = tmp_path / "seen"
    with beam.Pipeline(options=PipelineOptions(beam_defaults(["--direct_num_workers=1"]))) as p:
        # (self-contained: the worker process cannot import this test module)
        _ = p | beam.Create([str(seen)]) | beam.Map(lambda path: open(path, "w").write(
            f"{__import__('os').getpid()} {__import__('os').environ.get('GLIBC_TUNABLES')}\n"
            + open("/proc/self/maps").read()))
    first, maps = seen.read_text().split("\n", 1)
    pid, tunables = first.split(" ", 1)
    assert int(pid) != os.getpid() and tunables == WORKER_MALLOC
    if allocator is None:
        pytest.skip("no jemalloc on this machine: the workers' glibc tunables were checked, not the preload")
    assert JEMALLOC in maps  # the worker process runs on it


def test_worker_allocator_choice(tmp_path):
    assert worker_allocator({WORKER_ALLOCATOR_ENV: "glibc"}) is None
    lib = tmp_path / "libother.so"
    lib.write_bytes(b"")
    assert worker_allocator({WORKER_ALLOCATOR_ENV: str(lib)}) == str(lib)
    with pytest.raises(ConfigError, match="not a file"):
        worker_allocator({WORKER_ALLOCATOR_ENV: str(tmp_path / "missing.so")})
    env = {WORKER_ALLOCATOR_ENV: str(lib), "LD_PRELOAD": "libfoo.so"}
    worker_environment(env)
    assert env["LD_PRELOAD"] == f"{lib}:libfoo.so"  # first, the user's kept
    env = {WORKER_ALLOCATOR_ENV: str(lib), "LD_PRELOAD": "/opt/libtcmalloc.so"}
    worker_environment(env)
    assert env["LD_PRELOAD"] == "/opt/libtcmalloc.so"  # never two allocators


def test_dask_by_name_any_case_with_a_task_per_element():
    """`--runner=DaskRunner` (or dask) is mixprep's DaskRunner; each Create element its own partition,
    unless the user sized them."""
    for name in ("DaskRunner", "dask", "DASK", "daskrunner"):
        args = beam_defaults([f"--runner={name}", "--dask_client_address=127.0.0.1:8786"])
        assert runner_of([f"--runner={name}"]) == DASK_RUNNER, name
        assert "--dask_partition_size=1" in args and "--dask_client_address=127.0.0.1:8786" in args
        assert not any(a.startswith("--direct_") for a in args)
    for sized in ("--dask_npartitions=8", "--dask_partition_size=4"):
        assert "--dask_partition_size=1" not in beam_defaults(["--runner=DaskRunner", sized])


def test_dask_runs_two_pipelines_others_one_job():
    assert not one_job(beam_defaults(["--runner=DaskRunner"]))
    assert not one_job(["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"])
    assert one_job(beam_defaults([])) and one_job(["--runner=DataflowRunner"])


def test_mixprep_dask_runner_is_beams():
    from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner

    p = beam.Pipeline(options=PipelineOptions(beam_defaults(["--runner=DaskRunner"])))
    assert isinstance(p.runner, BeamDaskRunner) and type(p.runner).__module__ == "pipeline.runners"
