"""Local runs take Beam's FnApiRunner by name, never Prism fetched at run time (pipeline/runners.py)."""

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import beam_defaults
from pipeline.runners import LOCAL_RUNNER


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
