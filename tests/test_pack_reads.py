"""The pack stage reads each cache part's documents in runs, once per shard: on an object store a
request per (cache part, shard), not per document copy; and the shards stay what per-copy reads
wrote."""

import collections
import importlib.util
import os

import numpy as np
import pytest
from conftest import IN_PROCESS, ROOT, local_digest, s3_digest

from pipeline import pack
from pipeline.cache import TokenCache
from pipeline.config import load_mixture
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
    gets = collections.Counter()
    send = botocore.endpoint.Endpoint._send

    def counted(endpoint, request):
        path = request.url.split("?")[0]
        if request.method == "GET" and path.endswith(".bin") and "/cache/" in path:
            gets[path.rsplit("/", 1)[-1]] += 1
        return send(endpoint, request)

    monkeypatch.setattr(botocore.endpoint.Endpoint, "_send", counted)
    remote = run_mixture(cfg(corpus), data, out, cache, options)
    copies = remote["sources"]["refinedweb"]["copies"]
    assert copies > 5_000 and len(gets) == 1, gets
    assert all(n <= 3 for n in gets.values()), gets  # one request per (part, shard): 3 shards
    local = run_mixture(cfg(corpus), str(corpus), str(tmp_path / "mix"), str(tmp_path / "cache"), IN_PROCESS)
    assert remote == local
    assert s3_digest(s3_server.endpoint, "mixprep-scale-out", "mix") == local_digest(tmp_path / "mix")


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
