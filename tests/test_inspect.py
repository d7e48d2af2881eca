"""Provenance beside every shard, and `mixprep inspect`: what a sample holds, where a document went."""

import json
import os
import shutil

import numpy as np
from conftest import TOKENIZER, mixprep

from pipeline.cache import TokenCache
from pipeline.dataset import MixtureDataset
from pipeline.inspect import Provenance, doc_copies, sample_pieces
from pipeline.layout import cache_dir
from pipeline.outputs.verify import sha256_file
from pipeline.pack import PROVENANCE_DTYPE
from pipeline.tokenizer import load_tokenizer


def caches(built, manifest):
    return {n: TokenCache(cache_dir(built["cache"], n, s["cache_fingerprint"])) for n, s in manifest["sources"].items()}


def test_provenance_is_compact_listed_and_complete(built):
    m = json.load(open(os.path.join(built["out"], "manifest.json")))
    copies = 0
    for shard in m["shards"]:
        side = json.load(open(os.path.join(built["out"], "_shards", shard["prefix"] + ".json")))
        prov = side["provenance"]
        path = os.path.join(built["out"], prov["file"])
        assert prov["file"] == f"_provenance/{shard['prefix']}.refs.npy" and sha256_file(path) == prov["sha256"]
        table = np.load(path)
        assert table.dtype == PROVENANCE_DTYPE and table.dtype.itemsize == 14
        assert prov["bytes"] == os.path.getsize(path) <= 256 + 14 * len(table)  # .npy header + 14 bytes a copy
        assert int(table["n"].sum()) == shard["tokens"] + shard["tail_tokens"]
        copies += len(table)
    assert copies == sum(s["copies"] for s in m["sources"].values())


def test_every_sample_is_the_documents_its_provenance_names(built):
    prov = Provenance(built["out"])
    c = caches(built, prov.manifest)
    ds = MixtureDataset(built["out"])
    assert prov.samples == len(ds)
    for i in range(len(ds)):
        _, _, pieces = sample_pieces(prov, i)
        got = np.concatenate([c[p.source].tokens(p.part)[p.row][p.doc_start:p.doc_end] for p in pieces])
        assert np.array_equal(got, ds[i]), i
        assert pieces[0].sample_start == 0 and pieces[-1].sample_end == prov.width
        assert all(a.sample_end == b.sample_start for a, b in zip(pieces, pieces[1:]))


def test_inspect_sample_marks_documents_and_decodes(built):
    prov = Provenance(built["out"])
    i = next(i for i in range(prov.samples) if len(sample_pieces(prov, i)[2]) >= 3)
    k, j, pieces = sample_pieces(prov, i)
    rc, out, err = mixprep("inspect", built["out"], "--sample", i, "--cache", built["cache"], "--tokenizer", TOKENIZER)
    assert rc == 0, err
    c = caches(built, prov.manifest)
    assert out.startswith(f"small sample {i} of {prov.samples}: shard {prov.shards[k]} entry {j}; 512 tokens from "
                          f"{len(pieces)} document pieces")
    tok = load_tokenizer(TOKENIZER).tokenizer
    for p in pieces:
        doc_id = c[p.source].doc_table(p.part, columns=["doc_id"]).column("doc_id")[p.row].as_py()
        assert f"──── [{p.sample_start}, {p.sample_end}) {p.source} {doc_id} " in out
        ids = c[p.source].tokens(p.part)[p.row][p.doc_start:p.doc_end].tolist()
        assert tok.decode(ids, skip_special_tokens=False) in out
    rc, brief, _ = mixprep("inspect", built["out"], "--sample", i, "--cache", built["cache"], "--no-text")
    assert rc == 0 and "────" not in brief and "sample tokens  source" in brief


def test_inspect_doc_finds_every_copy(built):
    prov = Provenance(built["out"])
    c = caches(built, prov.manifest)
    # The last piece of the first sample from 5 on where a document starts and runs on into the next
    # sample (a document that covers whole samples is listed as "N whole samples" instead).
    k = next(k for k in range(5, 10**6) if sample_pieces(prov, k)[2][-1].doc_start == 0)
    p = sample_pieces(prov, k)[2][-1]
    doc_id = c[p.source].doc_table(p.part, columns=["doc_id"]).column("doc_id")[p.row].as_py()
    rc, out, err = mixprep("inspect", built["out"], "--doc", f"{p.source}:{doc_id}", "--cache", built["cache"])
    assert rc == 0, err
    copies = doc_copies(prov, p.source, p.part, p.row)
    assert out.startswith(f"{p.source}:{doc_id}: {p.n:,} tokens") and f"{len(copies)} cop" in out
    assert f"sample {k} [{p.sample_start}, {p.sample_end})" in out
    if p.doc_end < p.n:
        assert f"sample {k + 1} [0, " in out


def test_inspect_errors_read_well(built, tmp_path):
    rc, _, err = mixprep("inspect", built["out"], "--sample", 10**6, "--cache", built["cache"])
    assert rc == 2 and "sample 1000000 is out of range" in err
    rc, _, err = mixprep("inspect", built["out"], "--doc", "pile:no/such:1", "--cache", built["cache"])
    assert rc == 2 and "document 'no/such:1' is not in the token cache of 'pile'" in err
    rc, _, err = mixprep("inspect", built["out"], "--doc", "pile", "--cache", built["cache"])
    assert rc == 2 and "expected SOURCE:DOC_ID" in err
    other = tmp_path / "tokenizer.json"
    other.write_bytes(open(TOKENIZER, "rb").read() + b"\n")
    rc, _, err = mixprep("inspect", built["out"], "--sample", 0, "--cache", built["cache"], "--tokenizer", other)
    assert rc == 2 and "is not the one this mixture was tokenized with" in err
    rc, _, err = mixprep("inspect", built["out"], "--sample", 0, "--cache", tmp_path / "nocache")
    assert rc == 2 and "Pass the cache folder the run used (`--cache DIR`)" in err
    # Shards written without provenance (an older mixprep) say so.
    old = tmp_path / "old"
    shutil.copytree(built["out"], old)
    shutil.rmtree(old / "_provenance")
    rc, _, err = mixprep("inspect", old, "--sample", 0, "--cache", built["cache"])
    assert rc == 2 and "cannot read the shard's provenance" in err


def test_a_copy_in_a_shard_tail_is_reported_as_not_written(built):
    prov = Provenance(built["out"])
    shard = prov.manifest["shards"][0]
    assert shard["tail_tokens"] > 0
    table, offsets, names = prov.refs(0)
    last = table[-1]
    (copy,) = [c for c in doc_copies(prov, names[last["source"]], int(last["part"]), int(last["row"]))
               if c["position"] == len(table) - 1]
    in_tail = min(int(last["n"]), shard["tail_tokens"])  # the tail is the stream's last tokens
    assert copy["where"].endswith(f"{in_tail:,} tokens in the shard's tail (not written)")
