"""Duplicate clusters through real Beam pipelines: the same removals as the numpy path, byte for byte,
across runs and with 1 or 2 workers."""

import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from conftest import IN_PROCESS, TOKENIZER

from pipeline.dedup.clusters import KINDS, keep_key
from pipeline.dedup.content import content_key
from pipeline.dedup.labelled import build_corpus, resolve_corpus, tokenizer_words
from pipeline.dedup.minhash import DEFAULT_PARAMS, band_keys, signatures
from pipeline.dedup.transforms import CandidatePairs, ExactPairs, ResolveClusters, VerifyPairs, resolve_pairs
from pipeline.runners import LOCAL_RUNNER
from pipeline.tokenizer import Encoder, load_tokenizer

PRIORITY = ("web", "pile")
TWO_WORKERS = [f"--runner={LOCAL_RUNNER}", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]

_COLLECTED = {}


class _Collect:
    """An assert_that matcher that keeps what it sees (local runners run it in this process)."""

    def __init__(self, key):
        self.key = key

    def __call__(self, items):
        _COLLECTED[self.key] = list(items)


@pytest.fixture(scope="module")
def case():
    tok = load_tokenizer(TOKENIZER)
    corpus = build_corpus(1, 40, vocabulary=tokenizer_words(tok))
    ids = Encoder(tok).encode_batch(corpus.texts())
    refs = corpus.refs()
    keys = [keep_key(r, PRIORITY) for r in refs]
    sigs = signatures(ids)
    kept, kind = resolve_corpus(corpus, ids, priority=PRIORITY)
    expected = sorted((keys[i], keys[kept[i]], KINDS[kind[i]]) for i in range(len(keys)) if kind[i])
    return {"keys": keys, "texts": corpus.texts(), "sigs": sigs, "expected": expected}


def run(case, options, name):
    with TestPipeline(options=PipelineOptions(options)) as p:
        docs = p | "Docs" >> beam.Create(list(zip(case["keys"], case["texts"], case["sigs"])))
        exact = docs | "ContentKeys" >> beam.Map(lambda d: (d[0], content_key(d[1])))
        near = docs | "BandKeys" >> beam.Map(lambda d: (d[0], band_keys(d[2])))
        sigs = docs | "Signatures" >> beam.Map(lambda d: (d[0], d[2].tobytes()))
        pairs = {"exact": exact | "ExactPairs" >> ExactPairs(),
                 "near": (near | "NearPairs" >> CandidatePairs()
                          | "Verify" >> VerifyPairs(sigs, DEFAULT_PARAMS.threshold))}
        assert_that(pairs | ResolveClusters(), _Collect(name))
    return json.dumps(sorted(_COLLECTED.pop(name))).encode()


def test_beam_gives_the_numpy_answer_byte_for_byte_across_runs_and_worker_counts(case):
    expected = json.dumps(case["expected"]).encode()
    assert {k for _, _, k in case["expected"]} == {"exact", "near"}
    first = run(case, IN_PROCESS, "first")
    assert first == expected
    assert run(case, IN_PROCESS, "again") == first
    assert run(case, TWO_WORKERS, "two workers") == first


def test_resolve_pairs_needs_no_order_and_names_exact_only_within_a_content_group():
    a, b, c, d = (0, 1, "s", 0, 0), (0, 2, "s", 0, 1), (1, 0, "t", 0, 0), (1, 3, "t", 0, 1)
    tagged = [("exact", (a, b)), ("near", (c, b)), ("exact", (c, d))]
    out = resolve_pairs(tagged)
    assert out == resolve_pairs(reversed(tagged)) == [(b, a, "exact"), (c, a, "near"), (d, a, "near")]
    assert resolve_pairs([]) == []
