"""The exact-duplicate key: the documented normalization, a stable 128-bit hash, exact dedup on the labelled corpus."""

import os
import subprocess
import sys
import unicodedata
from unittest import mock

import numpy as np
import pytest
from conftest import ROOT, fuzz_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.dedup import content
from pipeline.dedup.content import content_key, content_keys, key_bytes, key_hex, normalize
from pipeline.dedup.labelled import build_corpus

# xxh3-128 (seed 0) of "Café au lait": a change to the key breaks every cache's table (CACHE_VERSION).
GOLDEN = "d9c025def8be774427977b43fede1838"


def test_normalization_is_nfc_then_whitespace_runs_to_one_space():
    assert normalize("  Cafe\u0301\t au\r\n\r\n lait\u00a0\u3000\n") == "Caf\u00e9 au lait"
    assert normalize("a\x1cb") == "a b"  # str.split()'s separators, as documented
    assert normalize("\ufb01ne") == "\ufb01ne"  # NFC, not NFKC: the ligature stays
    assert normalize("  a  b ", "raw") == "  a  b "
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize("a", "nfkc")


def test_the_key_is_fixed_across_processes_and_hash_seeds():
    code = "from pipeline.dedup.content import content_key; print(content_key('Caf\\u00e9 au lait').hex())"
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outs == {content_key("Café au lait").hex()} == {GOLDEN}
    assert len(content_key("x")) == 16


def test_batch_keys_are_the_single_keys_packed_in_sortable_uint64_pairs():
    texts = ["b", "a", "", "Cafe\u0301  x", "\ud800 lone surrogate"]
    keys = content_keys(texts)
    assert keys.shape == (5, 2) and keys.dtype == np.uint64
    assert key_bytes(keys) == [content_key(t) for t in texts]
    assert key_hex(keys) == [content_key(t).hex() for t in texts]
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    assert [key_bytes(keys)[i] for i in order] == sorted(content_key(t) for t in texts)


_words = st.lists(st.text(st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc")), min_size=1), min_size=1)
_gaps = st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " \n\n "]), min_size=1)


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(_words, _gaps, st.sampled_from(["", " ", "\n"]))
def test_whitespace_and_composition_variants_share_the_key(words, gaps, edge):
    plain = " ".join(words)
    varied = edge + "".join(w + gaps[i % len(gaps)] for i, w in enumerate(words)) + edge
    assert content_key(varied) == content_key(plain)
    assert content_key(unicodedata.normalize("NFD", plain)) == content_key(plain)
    assert normalize(normalize(varied)) == normalize(varied)


def test_exact_dedup_finds_every_exact_whitespace_and_unicode_copy_and_nothing_else():
    corpus = build_corpus(seed=3, bases=60)
    expected = {}
    for i, d in enumerate(corpus.docs):
        expected.setdefault((d.base, d.kind in ("original", "exact", "whitespace", "unicode")), set()).add(i)
    truth = sorted(sorted(g) for (_, together), g in expected.items() if together)
    truth += sorted([i] for (_, together), g in expected.items() if not together for i in g)

    def groups(normalization):
        by_key = {}
        for i, k in enumerate(key_bytes(content_keys(corpus.texts(), normalization))):
            by_key.setdefault(k, []).append(i)
        return sorted(by_key.values())

    assert groups("nfc_whitespace") == sorted(truth)
    # Raw bytes: only the exact copies share their original's key.
    raw_truth = {}
    for i, d in enumerate(corpus.docs):
        raw_truth.setdefault((d.base, d.kind in ("original", "exact")) if d.kind in ("original", "exact") else i,
                             []).append(i)
    assert groups("raw") == sorted(raw_truth.values())


_any_text = st.lists(st.one_of(st.characters(), st.sampled_from(
    [chr(c) for c in range(0x110000) if chr(c).isspace()] + ["e\u0301", "\u1100\u1161", "\u2000", "\ufb01", "\u00e9",
                                                           "\ud800"]))).map("".join)


@settings(max_examples=fuzz_examples(500), deadline=None)
@given(st.lists(_any_text, max_size=8), st.sampled_from(["nfc_whitespace", "raw"]))
def test_the_batch_path_gives_the_reference_keys(texts, normalization):
    """content_keys works on UTF-8 bytes (the cache's hot path); content_key on str, as documented."""
    assert key_bytes(content_keys(texts, normalization)) == [content_key(t, normalization) for t in texts]


def test_every_whitespace_character_is_one_space():
    """Both paths' whitespace is str.isspace()'s, every code point (ASCII ones on the byte path); a
    non-ASCII space is found in short texts (a regex) and in long ones (a code point table) alike."""
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    texts = [f"a{s}b{s}{s}c{s}" for s in spaces]
    assert key_bytes(content_keys(texts)) == [content_key("a b c")] * len(spaces)
    long = "\u00e9" * content._SHORT
    texts = [f"{long}{s}b{s}{s}c{s}" for s in spaces]
    assert key_bytes(content_keys(texts)) == [content_key(f"{long} b c")] * len(spaces)


def test_the_wide_space_table_is_str_isspace_beyond_ascii():
    """The batch path's table of non-ASCII spaces (looked up with mode="clip") and its regex for short
    texts are exactly str.isspace()'s."""
    table = content._WIDE_SPACE
    assert not table[-1]  # the entry every code point past the table's end is clipped to
    wide = {c for c in range(0x80, sys.maxunicode + 1) if chr(c).isspace()}
    assert set(np.flatnonzero(table).tolist()) == wide
    assert {c for c in range(0x80, sys.maxunicode + 1) if content._WIDE_SPACE_RE.match(chr(c))} == wide


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(st.lists(_any_text, max_size=12), st.integers(1, 40), st.sampled_from([0, content._SHORT]))
def test_keys_do_not_depend_on_where_the_batch_path_cuts_its_chunks(texts, chunk_bytes, short):
    """Texts are joined into chunks of ~_CHUNK_BYTES: a whitespace run never joins two texts, whatever the
    cut; and non-ASCII spaces are found by the code point table as by the regex (``short`` = 0: table only)."""
    with mock.patch.object(content, "_CHUNK_BYTES", chunk_bytes), mock.patch.object(content, "_SHORT", short):
        got = key_bytes(content_keys(texts))
    assert got == [content_key(t) for t in texts]


def test_no_text_is_left_out_or_shifted_at_the_edges_of_a_batch():
    texts = ["", " ", "\n\n", "a", " a ", "", "\u3000", "b  c", ""]
    with mock.patch.object(content, "_CHUNK_BYTES", 2):
        assert key_bytes(content_keys(texts)) == [content_key(t) for t in texts]
    assert content_keys([]).shape == (0, 2)
    assert len({content_key(t) for t in texts}) == 3  # "", "a" and "b c": the blank ones are one text
