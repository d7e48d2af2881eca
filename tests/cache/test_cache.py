"""The token cache: tokenize once through Beam, read back exactly, reuse, resume, verify."""

import dataclasses
import os
import shutil
import time
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from conftest import BAD, SAMPLES, TOKENIZER

from pipeline.cache import (
    READ_MARK_SECONDS,
    BuildCaches,
    Readers,
    TokenCache,
    cache_fingerprint,
    deal_in_turn,
    local_workers,
    other_readers,
    remove_covered_samples,
)
from pipeline.dedup.content import content_key, key_hex
from pipeline.document import Reject
from pipeline.errors import FormatError
from pipeline.layout import READERS_DIR as READERS
from pipeline.outputs.verify import verify_path
from pipeline.sampling import SampleRule
from pipeline.sampling.topup import SampleView, Unseen
from pipeline.sources import SourceSpec, list_source_files, read_documents
from pipeline.sources.formats import TEXT_PER_FILE_BYTE, format_of
from pipeline.storage import write_json
from pipeline.tokenizer import load_tokenizer

PILE = SourceSpec("pile", "pile", root="EleutherAI/pile", exclude=("Pile-CC",))


def build(spec, data_root, cache_root, rule=None, earlier=None):
    """Run BuildCaches for one source in a TestPipeline; return (TokenCache, counters of the run)."""
    tok = load_tokenizer(TOKENIZER)
    files = list_source_files(spec, data_root)
    p = TestPipeline(options=PipelineOptions([]))
    transform = BuildCaches([(spec, files, rule)], tok, str(cache_root), {spec.name: earlier} if earlier else None)
    _ = p | f"TokenizeSource[{spec.name}]" >> transform
    result = p.run()
    result.wait_until_finish()
    counters = {}
    for c in result.metrics().query(MetricsFilter())["counters"]:
        counters[f"{c.key.metric.namespace}/{c.key.metric.name}"] = c.committed
    return TokenCache(transform.directories[spec.name]), counters


@pytest.fixture(scope="module")
def pile_cache(tmp_path_factory):
    return build(PILE, SAMPLES, tmp_path_factory.mktemp("cache"))


def test_round_trip_every_document(pile_cache):
    cache, _ = pile_cache
    tok = load_tokenizer(TOKENIZER)
    decode = tok.tokenizer.decode
    files = list_source_files(PILE, SAMPLES)
    for part, sf in enumerate(files):
        docs = list(read_documents(PILE, sf))
        table = cache.doc_table(part).to_pydict()
        tokens = cache.tokens(part)
        assert table["doc_id"] == [d.doc_id for d in docs]
        assert table["subset"] == [d.subset for d in docs]
        for i, d in enumerate(docs):
            ids = tokens[i]
            assert ids[-1] == tok.eos_id and table["n_tokens"][i] == len(ids)
            assert decode(ids[:-1].tolist(), skip_special_tokens=False) == d.text


def test_random_access_matches_a_plain_reread(pile_cache):
    cache, _ = pile_cache
    prefix = cache.prefix(0)
    flat = np.fromfile(prefix + ".bin", dtype=np.uint16)
    lengths = cache.tokens(0).sequence_lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(lengths), 50):
        assert np.array_equal(cache.tokens(0)[i], flat[starts[i] : starts[i] + lengths[i]])


def test_stats_and_accounting(pile_cache):
    cache, counters = pile_cache
    m = cache.manifest
    a = m["accounting"]
    assert a["read"] == 234 and a["read"] == a["forwarded"] + a["rejected"] + a["excluded_subset"]
    assert m["stats"]["documents"] == a["forwarded"] == counters["source:pile/forwarded"]
    assert m["stats"]["tokens"] == sum(p["tokens"] for p in m["parts"]) == counters["cache:pile/tokens"]
    hist = m["stats"]["histogram"]
    assert sum(hist["documents"]) == m["stats"]["documents"] and sum(hist["tokens"]) == m["stats"]["tokens"]
    assert sum(s["tokens"] for s in m["stats"]["subsets"].values()) == m["stats"]["tokens"]
    assert m["tokenizer"]["sha256"] == load_tokenizer(TOKENIZER).sha256
    lengths = cache.doc_table(0).column("n_tokens").to_pylist() + cache.doc_table(1).column("n_tokens").to_pylist()
    assert any(n > 16384 for n in lengths)


def test_verify_passes_then_catches_damage(pile_cache, tmp_path):
    cache, _ = pile_cache
    assert verify_path(cache.directory)[-1].endswith("ok")
    copy = tmp_path / "copy"
    shutil.copytree(cache.directory, copy)
    with open(copy / "part-00001.bin", "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    with pytest.raises(FormatError, match="part-00001.bin: sha256"):
        verify_path(str(copy))


def test_rejects_are_written_with_file_and_line(tmp_path):
    spec = SourceSpec("rp", "redpajama", root="redpajama", paths=("*/*.jsonl",))
    cache, _ = build(spec, BAD, tmp_path)
    rejects = [read_json_line(line) for p in ("part-00000", "part-00001")
               for line in open(os.path.join(cache.directory, p + ".rejects.jsonl"), encoding="utf-8")]
    assert sorted((r["file"], r["position"], r["reason"]) for r in rejects)[:2] == [
        ("arxiv/arxiv_bad.jsonl", "10", "empty_text"), ("arxiv/arxiv_bad.jsonl", "6", "malformed_json")]
    assert cache.manifest["accounting"]["rejected"] == len(rejects) == 7


def read_json_line(line):
    import json

    return json.loads(line)


def test_the_document_table_holds_each_documents_content_key(pile_cache):
    """The key dedup resolves by is the one content.py computes from the text read, under the normalization
    the fingerprint names; a cache built under `raw` is another cache."""
    cache, _ = pile_cache
    assert cache.manifest["content_normalization"] == "nfc_whitespace"
    for part, sf in enumerate(list_source_files(PILE, SAMPLES)):
        docs = [d for d in read_documents(PILE, sf) if not isinstance(d, Reject)]
        table = cache.doc_table(part, columns=["content_key_hi", "content_key_lo"])
        got = np.stack([table.column(c).to_numpy() for c in ("content_key_hi", "content_key_lo")], axis=1)
        assert got.dtype == np.uint64 and len(got) == len(docs)
        assert [bytes.fromhex(h) for h in key_hex(got)] == [content_key(d.text) for d in docs]
    tok, files = load_tokenizer(TOKENIZER), list_source_files(PILE, SAMPLES)
    assert cache_fingerprint(PILE, files, tok) == cache_fingerprint(PILE, files, tok, None, "nfc_whitespace")
    assert cache_fingerprint(PILE, files, tok, None, "raw") != cache_fingerprint(PILE, files, tok)


def test_fingerprint_follows_files_and_tokenizer(tmp_path):
    tok = load_tokenizer(TOKENIZER)
    files = list_source_files(PILE, SAMPLES)
    base = cache_fingerprint(PILE, files, tok)
    assert cache_fingerprint(PILE, files, tok) == base
    grown = [files[0].__class__(files[0].path, files[0].rel, files[0].size + 1, files[0].folder), *files[1:]]
    assert cache_fingerprint(PILE, grown, tok) != base
    other_tok = tok.__class__(**{**tok.__dict__, "sha256": "0" * 64})
    assert cache_fingerprint(PILE, files, other_tok) != base
    assert cache_fingerprint(SourceSpec("pile", "pile", root="EleutherAI/pile"), files, tok) != base


def test_a_rerun_keeps_finished_parts(tmp_path):
    cache, counters = build(PILE, SAMPLES, tmp_path)
    assert counters.get("cache:pile/parts_reused", 0) == 0
    # Simulate a crash before part 1 finished: part 1 and cache.json are gone, the others stay.
    for name in os.listdir(cache.directory):
        if name.startswith("part-00001") or name == "cache.json":
            os.remove(os.path.join(cache.directory, name))
    before = os.stat(os.path.join(cache.directory, "part-00000.bin")).st_mtime_ns
    again, counters = build(PILE, SAMPLES, tmp_path)
    assert counters["cache:pile/parts_reused"] == len(cache.parts) - 1 > 0
    assert os.stat(os.path.join(cache.directory, "part-00000.bin")).st_mtime_ns == before
    assert again.manifest == cache.manifest


def test_a_top_up_copies_the_earlier_sample_and_equals_a_fresh_build(tmp_path):
    first = SampleRule(bounds=(512,), rates=(0.3, 0.2), chars_per_token=(2.0, 6.0))
    more = dataclasses.replace(first, rates=(0.5, 0.6))
    small, _ = build(PILE, SAMPLES, tmp_path / "a", first)
    topped, counters = build(PILE, SAMPLES, tmp_path / "a", more, earlier=small.directory)
    fresh, fresh_counters = build(PILE, SAMPLES, tmp_path / "b", more)
    assert counters["cache:pile/tokens_copied"] == small.stats["tokens"] > 0
    assert counters["cache:pile/tokens"] == fresh_counters["cache:pile/tokens"] > small.stats["tokens"]
    assert "cache:pile/tokens_copied" not in fresh_counters
    assert sorted(os.listdir(topped.directory)) == sorted(os.listdir(fresh.directory))
    for name in os.listdir(fresh.directory):  # the same bytes as a cache built from scratch
        with open(os.path.join(topped.directory, name), "rb") as a:
            with open(os.path.join(fresh.directory, name), "rb") as b:
                assert a.read() == b.read(), name
    with pytest.raises(ValueError, match="not a sample of the same files that the new rule covers"):
        BuildCaches([(PILE, list_source_files(PILE, SAMPLES), first)], load_tokenizer(TOKENIZER), str(tmp_path / "c"),
                    {"pile": topped.directory})


def test_a_sample_keeps_what_it_left_and_any_cache_holding_it_gives_the_same_view(tmp_path):
    """The documents a sampled cache does not tokenize stay as a histogram of unit and length
    (topup.py); the top-up's view of a rule is the same from its own cache, a larger sample's or
    the whole source's."""
    first = SampleRule(bounds=(512,), rates=(0.3, 0.2), chars_per_token=(2.0, 6.0))
    more = dataclasses.replace(first, rates=(0.5, 0.6))
    small, _ = build(PILE, SAMPLES, tmp_path, first)
    larger, _ = build(PILE, SAMPLES, tmp_path, more)
    whole, _ = build(PILE, SAMPLES, tmp_path)
    assert whole.manifest["unseen"] is None
    left = Unseen.from_dict(small.manifest["unseen"])
    assert left.docs.sum() == small.manifest["accounting"]["not_tokenized"] > 0
    assert left.chars.sum() + sum(int(small.doc_table(p, ["n_chars"]).column("n_chars").to_numpy().sum())
                                  for p in range(len(small.parts))) == \
        sum(int(whole.doc_table(p, ["n_chars"]).column("n_chars").to_numpy().sum()) for p in range(len(whole.parts)))
    views = [SampleView.of(c, first.bounds, first) for c in (small, larger, whole)]
    for v in views[1:]:
        for name in ("known", "tokens_by_chars", "chars_by_chars"):
            assert np.array_equal(getattr(v, name), getattr(views[0], name)), name
        assert np.array_equal(v.unseen.chars, views[0].unseen.chars)
        assert np.array_equal(v.unseen.docs, views[0].unseen.docs)


def test_a_top_up_stops_on_a_damaged_earlier_sample(tmp_path):
    first = SampleRule(bounds=(512,), rates=(0.3, 0.3), chars_per_token=(2.0, 6.0))
    small, _ = build(PILE, SAMPLES, tmp_path, first)
    path = small.prefix(0) + ".docs.parquet"
    table = pq.read_table(path)
    hashes = table.column("doc_hash").to_numpy()[::-1].copy()  # documents out of order
    pq.write_table(table.set_column(table.schema.get_field_index("doc_hash"), "doc_hash", pa.array(hashes)), path)
    with pytest.raises(Exception, match="not the document its sample rule kept.*delete"):
        build(PILE, SAMPLES, tmp_path, dataclasses.replace(first, rates=(0.6, 0.6)), earlier=small.directory)


def test_files_are_handed_out_the_most_text_first():
    tok = load_tokenizer(TOKENIZER)
    rp = SourceSpec("rp", "redpajama", root="togethercomputer/RedPajama-Data-1T")
    sources = [(PILE, list_source_files(PILE, SAMPLES)), (rp, list_source_files(rp, SAMPLES))]
    transform = BuildCaches(sources, tok, "unused")
    order = transform.work_order()
    assert sorted(order) == [(j, i) for j, (_, files) in enumerate(sources) for i in range(len(files))]
    work = [transform._jobs[j].expected_work(i) for j, i in order]
    assert work == sorted(work, reverse=True)
    rp_files = sources[1][1]
    for i, f in enumerate(rp_files):  # compressed files hold several times their size in text
        assert transform._jobs[1].expected_work(i) == f.size * TEXT_PER_FILE_BYTE[format_of(f.path)]
    rule = SampleRule(bounds=(512,), rates=(0.5, 0.25), chars_per_token=(2.0, 6.0))
    half = BuildCaches([(PILE, sources[0][1], rule)], tok, "unused")
    assert half._jobs[0].expected_work(0) == pytest.approx(0.5 * transform._jobs[0].expected_work(0))


def test_dealing_in_turn_evens_out_the_workers_shares():
    rng = np.random.default_rng(7)
    sizes = sorted(rng.lognormal(0, 0.6, 77).tolist(), reverse=True)
    assert deal_in_turn(sizes, 1) == list(range(77))
    for workers in (2, 3, 4):
        order = deal_in_turn(sizes, workers)
        assert sorted(order) == list(range(77))
        dealt = [sum(sizes[k] for k in order[w::workers]) for w in range(workers)]
        in_order = [sum(sizes[w::workers]) for w in range(workers)]  # the sorted list dealt as it is
        assert max(dealt) - min(dealt) < min(sizes) * 2 < max(in_order) - min(in_order)
    assert deal_in_turn([3.0, 2.0, 1.0], 5) == [0, 1, 2] and deal_in_turn([], 2) == []


class _RecordWorker(beam.DoFn):
    """Writes which elements each worker (each DoFn instance) got, in the order it got them."""

    def __init__(self, out: str):
        self._out = out

    def setup(self):
        self._path = os.path.join(self._out, uuid.uuid4().hex)

    def process(self, element):
        with open(self._path, "a") as f:
            f.write(f"{element}\n")


def test_the_local_runner_deals_the_files_out_in_turn(tmp_path):
    """What ``BuildCaches.work_order`` relies on: Beam's local runner hands element k of the spread
    stage to worker k % workers, and each works through its share in order."""
    order = list(range(40, 0, -1))
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    with TestPipeline(options=options) as p:
        assert local_workers(p) == 2
        _ = (p | beam.Create(order, reshuffle=False) | beam.Reshuffle()  # as BuildCaches.expand
             | beam.ParDo(_RecordWorker(str(tmp_path))))
    shares = sorted([int(x) for x in path.read_text().split()] for path in tmp_path.iterdir())
    assert shares == sorted([order[0::2], order[1::2]])


def test_a_sample_is_served_by_a_cache_that_covers_it_and_removed_by_it(tmp_path):
    tok, files = load_tokenizer(TOKENIZER), list_source_files(PILE, SAMPLES)
    first = SampleRule(bounds=(512,), rates=(0.3, 0.2), chars_per_token=(2.0, 6.0))
    more = dataclasses.replace(first, rates=(0.5, 0.6))
    other = dataclasses.replace(first, rates=(0.2, 0.9))  # covers neither: tokenizes fewer short documents
    small, _ = build(PILE, SAMPLES, tmp_path, first)
    assert TokenCache.find(str(tmp_path), PILE, files, tok, more) is None
    topped, _ = build(PILE, SAMPLES, tmp_path, more, earlier=small.directory)
    crossed, _ = build(PILE, SAMPLES, tmp_path, other)
    assert TokenCache.find(str(tmp_path), PILE, files, tok, first).directory == small.directory  # its own
    assert remove_covered_samples(topped) == [small.directory]
    assert not os.path.exists(small.directory)
    found = TokenCache.find(str(tmp_path), PILE, files, tok, first)  # the smallest cache holding all of it
    assert found.directory == topped.directory
    assert TokenCache.find(str(tmp_path), PILE, files, tok) is None  # a sample never stands for the whole
    assert TokenCache.find(str(tmp_path), PILE, files[:-1], tok, first) is None  # nor for other files
    assert remove_covered_samples(crossed) == []
    whole, _ = build(PILE, SAMPLES, tmp_path)
    assert sorted(remove_covered_samples(whole)) == sorted([topped.directory, crossed.directory])
    assert os.listdir(tmp_path / "pile") == [os.path.basename(whole.directory)]


def test_a_sample_another_run_reads_is_not_removed(tmp_path):
    first = SampleRule(bounds=(512,), rates=(0.3, 0.2), chars_per_token=(2.0, 6.0))
    small, _ = build(PILE, SAMPLES, tmp_path, first)
    marks = os.path.join(small.directory, READERS)
    with Readers() as readers:  # this run's own mark never keeps a cache from this run
        readers.add(small)
        assert len(os.listdir(marks)) == 1 and other_readers(small.directory) == []
    assert not os.path.exists(marks)  # the mark goes when the run ends
    write_json(os.path.join(marks, "elsewhere-1.json"), {"run": "elsewhere-1", "since": time.time()})
    whole, _ = build(PILE, SAMPLES, tmp_path)
    Readers().add(whole)  # whole caches are never removed, so never marked
    assert not os.path.exists(os.path.join(whole.directory, READERS))
    assert other_readers(small.directory) == ["elsewhere-1"]
    assert remove_covered_samples(whole) == [] and os.path.exists(small.directory)
    write_json(os.path.join(marks, "elsewhere-1.json"),  # a crashed run's mark, long ago
               {"run": "elsewhere-1", "since": time.time() - READ_MARK_SECONDS - 1})
    assert remove_covered_samples(whole) == [small.directory]
    assert not os.path.exists(small.directory)
