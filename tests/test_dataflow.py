"""The pipelines as Dataflow would get them: built with DataflowRunner options, nothing submitted.

Every DoFn must pickle (workers unpickle them) and none may need this machine's disk: every file
it reads or writes is a gs:// URI, and the tokenizer travels inside the job (its JSON bytes).
"""

import dataclasses
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import BUCKET, DATAFLOW, ROOT, SAMPLES, TOKENIZER, on_gcs

from pipeline.cache import BuildCaches
from pipeline.config import load_mixture
from pipeline.mix.select import BucketSelection
from pipeline.mixture import prepare_outputs
from pipeline.one_pipeline import PlanStep, tokenize_plan_pack_transforms
from pipeline.pack import Packing, PackShards
from pipeline.sources import list_source_files
from pipeline.tokenizer import LoadedTokenizer, TokenizerInfo, load_tokenizer


def walk(obj, seen=None, where="fn"):
    """(where, value) for every value reachable from a (pickled and unpickled) DoFn."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield where, obj
    if isinstance(obj, (str, bytes, int, float, bool, type(None), np.ndarray, np.dtype, TokenizerInfo, type)):
        # A tokenizer's name is only a label: it carries the bytes (or the facts) it needs; classes
        # (Beam keeps a DoFn's type hints with it) hold no data.
        return
    if isinstance(obj, dict):
        items = [(f"{where}[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple, set)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
    elif dataclasses.is_dataclass(obj):
        items = [(f"{where}.{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__"):
        items = [(f"{where}.{k}", v) for k, v in vars(obj).items()]
    else:
        items = []
    for w, v in items:
        yield from walk(v, seen, w)


def local_paths(obj):
    """Every string inside a DoFn that names a local absolute path."""
    return [f"{w} = {v!r}" for w, v in walk(obj) if isinstance(v, str) and v.startswith("/")]


def check_every_dofn(p):
    """Pickle every DoFn as Beam does; none may hold a local path. Returns {label: unpickled fn}."""
    checked = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.ParDo):
                fn = pickler.loads(pickler.dumps(node.transform.fn))
                assert not local_paths(fn), (node.full_label, local_paths(fn))
                checked[node.full_label] = fn

    p.visit(Visitor())
    p.to_runner_api()  # the job graph Dataflow would receive
    return checked


@pytest.fixture(scope="module")
def cfg():
    return load_mixture(os.path.join(ROOT, "mixtures", "stage2.yaml"), {"tokenizer": TOKENIZER})


def test_tokenize_pipeline_for_dataflow(cfg):
    tok = load_tokenizer(TOKENIZER)
    p = beam.Pipeline(options=PipelineOptions(DATAFLOW))
    assert type(p.runner).__name__ == "DataflowRunner"
    sources = [(s.spec, on_gcs(list_source_files(s.spec, SAMPLES))) for s in cfg.sources if s.weight > 0]
    build = BuildCaches(sources, tok, f"{BUCKET}/cache")
    _ = p | "TokenizeSources" >> build
    labels = check_every_dofn(p)
    assert any(label.endswith("TokenizeFiles") for label in labels)
    assert len(build.directories) == 5 and all(d.startswith(BUCKET) for d in build.directories.values())


def test_pack_pipeline_for_dataflow(cfg):
    names = [s.name for s in cfg.sources if s.weight > 0]
    bounds = cfg.bucket_bounds
    select = tuple(tuple(BucketSelection(1, 2**63, (), 10, 10, 1) for _ in range(len(bounds) + 1)) for _ in names)
    packing = Packing(cfg.name, tuple(names), tuple(f"{BUCKET}/cache/{n}/0123456789abcdef" for n in names),
                      (3,) * len(names), tuple(bounds), select, (None,) * len(names), cfg.seed, 25, cfg.seq_len,
                      "uint16", f"{BUCKET}/out/stage2", "0" * 64)
    p = beam.Pipeline(options=PipelineOptions(DATAFLOW))
    _ = p | beam.Create([packing]) | "PackShards[stage2]" >> PackShards()
    assert not local_paths(pickler.loads(pickler.dumps(packing)))  # the side input every worker reads
    labels = check_every_dofn(p)
    assert any("RouteCopies" in label for label in labels) and any("WriteShards" in label for label in labels)


def test_one_pipeline_run_for_dataflow(cfg):
    """Tokenize, plan and pack as one job (a run that samples nothing): the plan step needs no local
    file either, not even the config's own path or the tokenizer's."""
    tok = load_tokenizer(TOKENIZER)
    cfg = dataclasses.replace(cfg, tokenizer=TOKENIZER)  # an absolute local path, as a user may write it
    assert cfg.origin.startswith("/")
    sources = [(s.spec, on_gcs(list_source_files(s.spec, SAMPLES))) for s in cfg.sources if s.weight > 0]
    build = BuildCaches(sources, tok, f"{BUCKET}/cache")
    p = beam.Pipeline(options=PipelineOptions(DATAFLOW))
    _ = tokenize_plan_pack_transforms(p, build, PlanStep(cfg, tok, build.directories, f"{BUCKET}/out/stage2",
                                                         prepare_outputs), cfg.name)
    fns = check_every_dofn(p)
    for stage in ("TokenizeFiles", "Plan", "RouteCopies", "WriteShards"):
        assert any(stage in label for label in fns), stage
    # Beam pickles a DoFn several times on its way to a worker (bz2, ~0.1 s per MB each time):
    # only the step that encodes carries the tokenizer.json.
    carriers = [label for label, fn in fns.items() if any(isinstance(v, LoadedTokenizer) for _, v in walk(fn))]
    assert [label.rsplit("/", 1)[-1] for label in carriers] == ["TokenizeFiles"]
