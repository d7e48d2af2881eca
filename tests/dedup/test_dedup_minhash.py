"""MinHash signatures of token ids: datasketch's affine32 scheme bit for bit, stable, accurate; the LSH math."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from pipeline.dedup import minhash as mh

RNG = np.random.default_rng(7)


def doc(n, vocab=50_000):
    return np.append(RNG.integers(2, vocab, n), 0).astype(np.uint32)  # EOS (0) last, as the cache stores


def test_signatures_equal_datasketch_minhash_of_the_same_ngram_hashes():
    datasketch = pytest.importorskip("datasketch")
    a, b = mh.DEFAULT_PARAMS.permutations()
    for tokens in (doc(1), doc(40), doc(3000)):
        m = datasketch.MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=int)
        assert (m.permutations == np.array([a, b])).all()  # drawn as datasketch draws them
        m.update_batch(mh.ngram_hashes(tokens).tolist())
        assert (m.hashvalues == mh.signature(tokens)).all()


def test_eos_is_dropped_and_dtype_does_not_matter():
    t = doc(30)
    s = mh.signature(t)
    assert (mh.signature(np.append(t[:-1], 7)) == s).all()
    assert (mh.signature(t[:-1], eos_last=False) == s).all()
    assert (mh.signature(t.astype(np.uint16)) == mh.signature(t.astype(np.int64))).all()
    assert not (mh.signature(t, eos_last=False) == s).all()  # the EOS would have made a new n-gram
    with pytest.raises(ValueError):
        mh.signature(np.zeros((2, 2), np.uint16))


def test_short_and_empty_documents():
    short = np.array([5, 6, 0], np.uint16)
    assert len(mh.ngram_hashes(short)) == 1  # fewer ids than an n-gram: one n-gram of them all
    assert not (mh.signature(short) == mh.signature(np.array([5, 6, 9, 0]))).all()
    empty = mh.signature(np.array([0], np.uint16))
    assert (empty == mh.EMPTY).all() and mh.band_keys(empty) == []


def test_batched_signatures_equal_one_by_one():
    docs = [doc(n) for n in (0, 1, 3, 5, 700, 4000, 4097, 9000, 20, 8192)] + [np.array([0], np.uint32)] * 2
    batch = mh.signatures(docs)
    assert batch.shape == (len(docs), 128) and batch.dtype == np.uint32
    assert (batch == np.stack([mh.signature(d) for d in docs])).all()


def test_signatures_are_the_same_in_another_process():
    code = ("import numpy as np; from pipeline.dedup.minhash import signature; "
            "print(signature(np.arange(1000, dtype=np.uint16)).tobytes().hex())")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outs == {mh.signature(np.arange(1000, dtype=np.uint16)).tobytes().hex()}


def test_the_estimate_is_within_its_standard_deviation_of_the_true_jaccard():
    base = doc(3000, vocab=2000)[:-1]
    errors = []
    for k in range(40):
        edited = base.copy()
        idx = RNG.choice(len(base), size=int(len(base) * RNG.uniform(0.005, 0.1)), replace=False)
        edited[idx] = RNG.integers(2, 2000, len(idx))
        s = mh.jaccard(base, edited, eos_last=False)
        est = mh.estimated_jaccard(mh.signature(base, eos_last=False), mh.signature(edited, eos_last=False))
        errors.append((est - s) / np.sqrt(s * (1 - s) / 128))
    errors = np.array(errors)
    assert np.abs(errors).max() < 4 and abs(errors.mean()) < 0.6, errors


def test_band_keys_are_the_signature_cut_in_bands():
    sigs = mh.signatures([doc(100), doc(50)])
    m = mh.band_matrix(sigs)
    assert m.shape == (2, 16)
    for i in range(2):
        keys = mh.band_keys(sigs[i])
        assert [k for k, _ in keys] == list(range(16))
        assert [bytes(m[i, j]) for j in range(16)] == [key for _, key in keys]
        assert keys[0][1] == sigs[i][:8].astype(">u4").tobytes()


def test_the_s_curve_and_the_stated_rates():
    assert mh.candidate_probability(0.8) == pytest.approx(1 - (1 - 0.8 ** 8) ** 16)
    stated = {0.5: 0.0607, 0.7: 0.6133, 0.8: 0.9470, 0.9: 0.9999}  # docs/DEDUP.md, minhash.py
    for s, p in stated.items():
        assert float(mh.candidate_probability(s)) == pytest.approx(p, abs=5e-5)
    verified = {0.5: 0.0, 0.7: 0.0050, 0.8: 0.4959, 0.9: 0.9995}
    for s, p in verified.items():
        assert mh.removal_probability(s) == pytest.approx(p, abs=5e-5)
    assert mh.DEFAULT_PARAMS.lsh_threshold == pytest.approx(16 ** -0.125)


def test_removal_probability_matches_simulated_minhash_agreements():
    rng = np.random.default_rng(0)
    for s in (0.72, 0.8, 0.85):
        equal = rng.random((100_000, 128)) < s
        candidate = equal.reshape(-1, 16, 8).all(axis=2).any(axis=1)
        joined = candidate & (equal.sum(axis=1) >= 103)  # ceil(0.8 * 128)
        assert candidate.mean() == pytest.approx(float(mh.candidate_probability(s)), abs=0.005)
        assert joined.mean() == pytest.approx(mh.removal_probability(s), abs=0.005)
        unverified = dataclasses.replace(mh.DEFAULT_PARAMS, threshold=None)
        assert mh.removal_probability(s, unverified) == pytest.approx(float(mh.candidate_probability(s)))


def test_optimal_bands_agree_with_datasketch():
    lsh = pytest.importorskip("datasketch.lsh")
    for t in (0.5, 0.7, 0.8, 0.9):
        assert mh.optimal_bands(t, 128) == lsh._optimal_param(t, 128, 0.5, 0.5)


def test_params_for_a_threshold_catch_it():
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        p = mh.params_for(t)
        assert p.threshold == t and p.bands * p.rows == 128
        assert mh.candidate_probability(t, p.bands, p.rows) >= 0.9
    with pytest.raises(ValueError):
        mh.MinHashParams(bands=10, rows=10)
    with pytest.raises(ValueError):
        mh.MinHashParams(threshold=1.5)
