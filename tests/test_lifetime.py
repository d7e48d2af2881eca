"""Long-lived objects frozen out of the garbage collector, in worker processes only."""

import gc
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from pipeline.lifetime import freeze_worker_state, in_worker_process


class _Frozen(beam.DoFn):
    def setup(self):
        freeze_worker_state()

    def process(self, element):
        yield in_worker_process(), gc.get_freeze_count()


def test_a_process_that_runs_pipelines_in_process_does_not_freeze():
    before = gc.get_freeze_count()
    assert not in_worker_process()
    freeze_worker_state()
    assert gc.get_freeze_count() == before
    with TestPipeline() as p:  # the in-process runner: setup runs here
        _ = p | beam.Create([1]) | beam.ParDo(_Frozen())
    assert gc.get_freeze_count() == before


def test_local_worker_processes_freeze_what_start_up_built(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))  # the workers import this module
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])

    def frozen_in_workers(seen):
        assert seen and all(worker for worker, _ in seen), seen
        assert all(count > 10_000 for _, count in seen), seen  # Beam alone is ~10^5 objects

    with TestPipeline(options=options) as p:
        seen = p | beam.Create(range(4)) | beam.Reshuffle() | beam.ParDo(_Frozen())
        assert_that(seen, frozen_in_workers)
