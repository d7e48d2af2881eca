"""Beam's type checks stay on: every pipeline builds with them, and a run passes the runtime check.

A new Beam release may check more than the last one did (2.78 began checking a GroupByKey's output
against the next DoFn's annotation): these tests are in the newest-release smoke set (`make
check-newest`), so such a release is caught by CI, not by a user.
"""

import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, TypeOptions
from apache_beam.typehints.decorators import TypeCheckError
from conftest import BUCKET, DATAFLOW, ROOT, SAMPLES, TOKENIZER, on_gcs, sampled_corpus, sampled_mixture

from pipeline.cache import BuildCaches
from pipeline.config import load_mixture
from pipeline.mix.select import BucketSelection
from pipeline.mixture import prepare_outputs, run_mixture
from pipeline.one_pipeline import PlanStep, tokenize_plan_pack_transforms
from pipeline.pack import Packing, PackShards
from pipeline.sources import list_source_files
from pipeline.tokenizer import load_tokenizer

RUNNERS = {
    "local": (["--runner=DirectRunner", "--pipeline_type_check"], lambda files: files, "/tmp/mixprep-typecheck"),
    "dataflow": ([*DATAFLOW, "--pipeline_type_check"], on_gcs, BUCKET),
}


@pytest.fixture(scope="module")
def cfg():
    return load_mixture(os.path.join(ROOT, "mixtures", "stage2.yaml"), {"tokenizer": TOKENIZER})


def checked_pipeline(runner: str) -> beam.Pipeline:
    p = beam.Pipeline(options=PipelineOptions(RUNNERS[runner][0]))
    assert p.options.view_as(TypeOptions).pipeline_type_check
    return p


def caches(cfg, runner: str) -> BuildCaches:
    _, where, root = RUNNERS[runner]
    sources = [(s.spec, where(list_source_files(s.spec, SAMPLES))) for s in cfg.sources if s.weight > 0]
    return BuildCaches(sources, load_tokenizer(TOKENIZER), f"{root}/cache")


def packing(cfg, runner: str) -> Packing:
    names = tuple(s.name for s in cfg.sources if s.weight > 0)
    root, bounds = RUNNERS[runner][2], cfg.bucket_bounds
    select = tuple(tuple(BucketSelection(1, 2**63, (), 10, 10, 1) for _ in range(len(bounds) + 1)) for _ in names)
    return Packing(cfg.name, names, tuple(f"{root}/cache/{n}/0123456789abcdef" for n in names), (3,) * len(names),
                   tuple(bounds), select, (None,) * len(names), cfg.seed, 4, cfg.seq_len, "uint16",
                   f"{root}/out/{cfg.name}", "0" * 64)


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_tokenize_pipeline_type_checks(cfg, runner):
    p = checked_pipeline(runner)
    _ = p | "TokenizeSources" >> caches(cfg, runner)
    p.to_runner_api()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_pack_pipeline_type_checks(cfg, runner):
    p = checked_pipeline(runner)
    _ = p | beam.Create([packing(cfg, runner)]) | f"PackShards[{cfg.name}]" >> PackShards()
    p.to_runner_api()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_driver_planned_pack_pipeline_type_checks(cfg, runner):
    p = checked_pipeline(runner)
    _ = p | f"PackShards[{cfg.name}]" >> PackShards(packing(cfg, runner))
    p.to_runner_api()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_one_job_pipeline_type_checks(cfg, runner):
    build, out = caches(cfg, runner), f"{RUNNERS[runner][2]}/out/{cfg.name}"
    p = checked_pipeline(runner)
    _ = tokenize_plan_pack_transforms(p, build, PlanStep(cfg, load_tokenizer(TOKENIZER), build.directories, out,
                                                         prepare_outputs), cfg.name)
    p.to_runner_api()


def test_the_check_is_really_on():
    """The control: with the same options, an annotation the input contradicts stops the build."""

    class _TakesInts(beam.DoFn):
        def process(self, element: int):
            yield element

    p = checked_pipeline("local")
    with pytest.raises(TypeCheckError, match="TakesInts"):
        _ = p | beam.Create(["a", "b"]) | "TakesInts" >> beam.ParDo(_TakesInts())


RUNTIME_CHECKED = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--runtime_type_check"]


def test_a_one_job_run_passes_the_runtime_type_check(tmp_path):
    """Stage 1 samples nothing: one job tokenizes, plans and packs, every element checked against
    the hints of the step it enters and leaves."""
    overrides = {"tokenizer": TOKENIZER, "total_tokens": 300_000, "shards": 2}
    cfg = load_mixture(os.path.join(ROOT, "mixtures", "stage1.yaml"), overrides)
    manifest = run_mixture(cfg, SAMPLES, str(tmp_path / "out"), str(tmp_path / "cache"), RUNTIME_CHECKED)
    assert manifest["totals"]["selected_tokens"] == 300_000


def test_a_sampled_run_passes_the_runtime_type_check(tmp_path):
    """Sources 6-9x larger than the mixture takes: a tokenize job for the samples, then a pack job."""
    sampled_corpus(tmp_path / "data", "a", 4, 8000, 1)
    sampled_corpus(tmp_path / "data", "b", 4, 8000, 2)
    cfg = sampled_mixture(tmp_path, 400_000)
    manifest = run_mixture(cfg, str(tmp_path / "data"), str(tmp_path / "out"), str(tmp_path / "cache"), RUNTIME_CHECKED)
    assert all(s["tokenized"]["sampled"] for s in manifest["sources"].values())
    assert manifest["totals"]["selected_tokens"] == 400_000
