"""The pack stage reads each cache part's documents in runs: locally each shard writer gathers its
documents from the part's mapping; on an object store the routing step reads each part once and
writes each shard's documents to one range of the part's routed file, so requests grow with parts x
shards and bytes with the caches, not with document copies or shards; and the shards stay what
per-copy reads wrote."""

import collections
import importlib.util
import os

import numpy as np
import pytest
from conftest import IN_PROCESS, ROOT, local_digest, s3_digest

from pipeline import pack
from pipeline.cache import TokenCache
from pipeline.config import load_mixture
from pipeline.errors import FormatError
from pipeline.layout import REFS_DIR
from pipeline.mixture import run_mixture
from pipeline.mmidx import MMIDXReader


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """50k documents of ~200 tokens in one RefinedWeb parquet file: a cache part of ~20 MB, larger
    than what a reader buffers (Beam's S3 reader 16 MiB, mixprep's blocks 8 MiB): per-copy reads
    made ~0.25 requests a copy on such a part."""
    out = tmp_path_factory.mktemp("corpus")
    _script("make_corpus").make_corpus(out, 50_000, 50_000, 120, os.path.join(ROOT, "tokenizer", "tokenizer.json"))
    return out


def cfg(corpus, layout="samples"):
    return load_mixture(str(corpus / "one-source.yaml"),
                        {"total_tokens": 1_200_000, "shards": 3, "layout": layout})


def test_reads_cover_every_row_once_in_runs(monkeypatch):
    monkeypatch.setattr(pack, "_SKIP_BYTES", 10)
    monkeypatch.setattr(pack, "_SPAN_BYTES", 16)
    lengths = np.array([5, 5, 5, 5, 5, 5, 5, 5, 15, 5])
    pointers = np.cumsum(lengths) - lengths
    rows = np.array([0, 2, 3, 6, 9])  # gaps after each: 5, 0, 10, 20 bytes
    reads = pack._reads(pointers, lengths, rows, 1)
    # one run of ~16-byte reads, each from where the last ended; a 20-byte gap starts a new run
    assert reads == [(0, 2), (3, 3), (4, 6), (9, 9)]
    covered = np.concatenate([np.arange(a, b + 1) for a, b in reads])
    assert set(rows) <= set(covered) and len(covered) == len(set(covered))
    assert pack._reads(pointers, lengths, np.array([], dtype=np.int64), 1) == []


def _rebuilt(out, cache_dirs, name):
    refs = np.load(os.path.join(out, "_provenance", name + ".refs.npy"))
    readers, pieces = {}, []
    for r in refs:
        key = (int(r["source"]), int(r["part"]))
        if key not in readers:
            readers[key] = TokenCache(cache_dirs[key[0]]).tokens(key[1])
        pieces.append(np.asarray(readers[key][int(r["row"])]))
    return np.concatenate(pieces)


def test_local_shards_equal_per_copy_reads(corpus, tmp_path):
    """Every shard's tokens are its copies' tokens, read one by one in provenance order."""
    for layout in ("samples", "documents"):
        out, cache = tmp_path / layout, tmp_path / "cache"
        manifest = run_mixture(cfg(corpus, layout), str(corpus), str(out), str(cache), IN_PROCESS)
        assert not (out / REFS_DIR).exists()  # the routed references, removed once shards are written
        (directory,) = [str(d) for d in (cache / "refinedweb").iterdir() if (d / "cache.json").exists()]
        caches = [directory]
        for shard in manifest["shards"]:
            stream = _rebuilt(str(out), caches, shard["prefix"])
            with MMIDXReader(os.path.join(out, shard["prefix"])) as r:
                written = np.concatenate([r[i] for i in range(len(r))])
            assert len(stream) - len(written) == shard["tail_tokens"]
            assert np.array_equal(written, stream[:len(written)])


def test_s3_reads_are_per_part_and_shard(corpus, s3_server, tmp_path, monkeypatch):
    import botocore.endpoint

    monkeypatch.setattr(pack, "_SPAN_BYTES", 256 << 10)  # several reads a run: they continue one request
    data = s3_server(str(corpus), "mixprep-scale", "corpus")
    s3_server.bucket("mixprep-scale-out")
    options = IN_PROCESS + s3_server.options
    out, cache = "s3://mixprep-scale-out/mix", "s3://mixprep-scale-out/cache"
    run_mixture(cfg(corpus), data, out, cache, options)  # the caches
    from pipeline import storage

    storage.delete_tree(out)
    sizes = _object_sizes(s3_server.endpoint, "mixprep-scale-out", "cache")
    gets, got = collections.Counter(), collections.Counter()
    send = botocore.endpoint.Endpoint._send

    def counted(endpoint, request):
        path = request.url.split("?")[0]
        response = send(endpoint, request)
        if request.method == "GET" and path.endswith((".bin", ".idx")) and "/cache/" in path:
            gets[path.rsplit("/", 1)[-1]] += 1
            got[path.rsplit("/", 1)[-1]] += int(response.headers.get("content-length", 0))
        return response

    monkeypatch.setattr(botocore.endpoint.Endpoint, "_send", counted)
    remote = run_mixture(cfg(corpus), data, out, cache, options)
    copies = remote["sources"]["refinedweb"]["copies"]
    (name,) = [k for k in sizes if k.endswith(".bin")]
    index = name[:-4] + ".idx"
    assert copies > 5_000 and set(gets) == {name, index}, gets
    # The part is read once, by the routing step, not once per shard (3 shards): a few requests of
    # one run, and its bytes once (each shard's documents then come from one range of the routed file).
    assert gets[name] <= 3, gets
    assert got[name] <= sizes[name] and got[index] == sizes[index], (got, sizes)
    local = run_mixture(cfg(corpus), str(corpus), str(tmp_path / "mix"), str(tmp_path / "cache"), IN_PROCESS)
    assert remote == local
    assert s3_digest(s3_server.endpoint, "mixprep-scale-out", "mix") == local_digest(tmp_path / "mix")


def _object_sizes(endpoint, bucket, prefix) -> dict[str, int]:
    import boto3

    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return {obj["Key"].rsplit("/", 1)[-1]: obj["Size"] for obj in listing["Contents"]}


def test_unchecked_reader_reads_the_same_and_still_refuses_a_torn_bin(tmp_path):
    """What the shard writers open: no per-entry checks, the same tokens, reads still in bounds."""
    from pipeline.errors import FormatError
    from pipeline.mmidx import write_sequences

    prefix = str(tmp_path / "part")
    seqs = [np.arange(n, dtype=np.uint16) for n in (3, 0, 5, 2)]
    write_sequences(prefix, seqs, np.uint16)
    with MMIDXReader(prefix, check=False) as r:
        assert np.array_equal(r.span(0, 3), np.concatenate(seqs))
        assert np.array_equal(r.take(np.array([2, 0])), np.concatenate([seqs[2], seqs[0]]))
    with open(prefix + ".bin", "ab") as f:
        f.write(b"\0")  # half a token
    with pytest.raises(FormatError, match="whole number"):
        MMIDXReader(prefix, check=False)


def _part(tmp_path, lengths):
    from pipeline.mmidx import write_sequences

    prefix = str(tmp_path / "part")
    rng = np.random.default_rng(0)
    write_sequences(prefix, [rng.integers(0, 60000, n).astype(np.uint16) for n in lengths], np.uint16)
    return prefix


def _refs(rows, lengths, part=0):
    refs = np.zeros(len(rows), pack.REF_DTYPE)
    refs["row"], refs["part"], refs["n"] = rows, part, np.asarray(lengths)[rows]
    refs["key"] = np.arange(len(rows))[::-1]
    return refs


def test_a_routed_bundle_holds_each_shards_documents_as_the_part_does(tmp_path):
    """What the routing step writes for a remote part is, shard by shard, exactly what a writer would
    gather from the part itself: its distinct documents in row order (a copy may repeat)."""
    lengths = [3, 0, 7, 2, 5, 1, 4]
    prefix = _part(tmp_path, lengths)
    by_shard = {0: _refs([6, 2, 2, 0], lengths), 2: _refs([1, 4, 3, 2], lengths)}
    with open(tmp_path / "routed", "wb") as f:
        sizes = pack._bundle(prefix, by_shard, np.dtype(np.uint16), f)
    data = (tmp_path / "routed").read_bytes()
    with MMIDXReader(prefix) as reader:
        at = 0
        for shard, refs in by_shard.items():
            expected = reader.take(np.unique(refs["row"]).astype(np.int64)).tobytes()
            assert sizes[shard] == len(expected) and data[at:at + len(expected)] == expected
            at += len(expected)
    assert at == len(data)


def test_a_writer_reads_a_bundle_as_it_reads_the_part_and_refuses_a_torn_one(tmp_path):
    lengths = [3, 0, 7, 2, 5, 1, 4]
    prefix = _part(tmp_path, lengths)
    refs = _refs([6, 2, 2, 0, 4], lengths)
    path = str(tmp_path / "routed")
    with open(path, "wb") as f:
        f.write(b"x" * 10)  # references or another shard's tokens before this one's
        (size,) = pack._bundle(prefix, {1: refs}, np.dtype(np.uint16), f).values()

    class Cache:
        def prefix(self, part):
            return prefix

    def stream(bundles):
        return np.concatenate(list(pack._pieces(refs, {0: Cache()}, np.dtype(np.uint16), bundles)))

    direct = stream({})
    assert np.array_equal(stream({(0, 0): pack.Routed(path, 0, len(refs), (10, size))}), direct)
    with MMIDXReader(prefix) as reader:  # the copies in order, one by one
        assert np.array_equal(direct, np.concatenate([reader[int(r)] for r in refs["row"]]))
    with pytest.raises(FormatError, match="token bytes routed"):
        stream({(0, 0): pack.Routed(path, 0, len(refs), (10, size - 2))})
    with open(path, "r+b") as f:
        f.truncate(10 + size - 2)  # a routed file cut short
    with pytest.raises(FormatError, match="short of the range.*_refs"):
        stream({(0, 0): pack.Routed(path, 0, len(refs), (10, size))})


def test_a_writer_refuses_a_part_whose_lengths_are_not_the_document_tables(tmp_path):
    lengths = [3, 0, 7, 2]
    prefix = _part(tmp_path, lengths)
    refs = _refs([2, 0], [3, 0, 6, 2])  # the table says 6 tokens where the part holds 7

    class Cache:
        def prefix(self, part):
            return prefix

    with pytest.raises(FormatError, match="document lengths differ"):
        list(pack._pieces(refs, {0: Cache()}, np.dtype(np.uint16)))
