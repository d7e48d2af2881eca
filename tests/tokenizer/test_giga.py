"""The gigatoken backend's gate: which backend each tokenizer gets, and that its ids are `tokenizers'`.

The ids themselves are compared for every backend in tests/tokenizer/test_fast.py (cut points, samples,
every code point); here: what the gate admits and refuses, and what gigatoken does differently
(literal special tokens, lone surrogates, its own threads) handled as the tiktoken path handles it.
"""

import json
import logging
import multiprocessing as mp
import os
import sys
from importlib.metadata import version

import pytest
from tokenizer_helpers import (  # noqa: F401
    SHIPPED,
    VARIED,
    _installed,
    _sample_texts,
    _with,
    dense_text,
    hide_packages,
    neox_like,
    shipped,
    whole_ids,
    write_config,
)

from pipeline.tokenizer import Encoder, load_tokenizer
from pipeline.tokenizer.fast import PROBE_TEXT
from pipeline.tokenizer.giga import (
    SAMPLE_BYTES,
    _expected_vocabulary,
    _GigaModel,
    _gigatoken_model,
    _GigatokenBackend,
    _without_specials,
    gigatoken_blocker,
    probe_texts,
    real_sample,
)

needs_gigatoken = pytest.mark.skipif(not _installed("gigatoken"), reason="gigatoken not installed")
TOKENIZERS = {"shipped": shipped, "neox_like": neox_like}


@pytest.mark.parametrize("which", ["shipped", "neox_like"])
def test_the_gate_admits_the_fastest_exact_backend(which):
    """The bundled tokenizer and a GPT-NeoX-like one (NFC, added tokens of 2..24 spaces): gigatoken
    where it is installed, else tiktoken; either way the ids of `tokenizers` on every sample document."""
    tok = TOKENIZERS[which]()
    enc = Encoder(tok, verify_bytes=0)
    expected = "gigatoken" if _installed("gigatoken") else "tiktoken"
    assert enc.backend == expected, enc.fast_blocker
    assert enc.refused == ({} if expected == "gigatoken" else {"gigatoken": enc.refused["gigatoken"]})
    info = enc.backend_info()
    assert info["backend"] == expected and info["requested"] == "auto" and info["threads"] == 1
    texts = VARIED + _sample_texts() + probe_texts(json.loads(tok.tokenizer.to_str()))
    got = enc.encode_batch(texts)
    want = [e.ids + [tok.eos_id] for e in tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    assert all(a.dtype == tok.dtype for a in got)
    assert [a.tolist() for a in got] == want


@pytest.mark.parametrize("which", ["shipped", "neox_like"])
def test_without_gigatoken_the_gate_falls_back_to_tiktoken(which, hide_packages, caplog):  # noqa: F811 (the fixture)
    hide_packages("gigatoken")
    with caplog.at_level(logging.WARNING, logger="pipeline.tokenizer"):
        enc = Encoder(TOKENIZERS[which]())
    assert enc.backend == "tiktoken"
    assert enc.refused == {"gigatoken": "gigatoken is not installed (pip install 'mixprep[fast]')"}
    assert "not encoding with gigatoken: gigatoken is not installed" in caplog.text and "trying tiktoken" in caplog.text


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"model__dropout": 0.1}, "dropout"),  # gigatoken loads it, and ignores it
        ({"normalizer": {"type": "NFKC"}}, "NFKC"),
        ({"model__byte_fallback": True}, "byte_fallback"),
        ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}},
         "only a single ByteLevel"),
        ({"added_tokens__1__special": False}, "not a run of spaces"),
        ({"pre_tokenizer__add_prefix_space": True}, "add_prefix_space"),
    ],
)
def test_gigatoken_blocker_names_the_reason(changes, reason):
    assert reason in gigatoken_blocker(_with(json.loads(shipped().tokenizer.to_str()), **changes))


@needs_gigatoken
@pytest.mark.parametrize("which", ["shipped", "neox_like"])
def test_gigatoken_holds_the_file_s_vocabulary_and_merges(which):
    """The loading check passes on its merits: gigatoken's vocabulary and merges are the file's."""
    config = json.loads(TOKENIZERS[which]().tokenizer.to_str())
    model = _gigatoken_model(TOKENIZERS[which]().json_bytes.decode())
    vocab, merges = _expected_vocabulary(config)
    assert model.model.vocab == vocab and model.model.merges == merges
    assert len(merges) == len(config["model"]["merges"]) > 7000


def test_a_vocabulary_that_is_not_byte_level_is_refused(tmp_path):
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    config["model"]["vocab"]["two words"] = max(config["model"]["vocab"].values()) + 1  # a real space
    reason = _expected_vocabulary(config)
    assert reason == "vocabulary entry 'two words' is not byte-level"
    if _installed("gigatoken"):
        assert _gigatoken_model(json.dumps(config)) == reason
        assert Encoder(load_tokenizer(write_config(tmp_path, config))).refused["gigatoken"] == reason


@needs_gigatoken
def test_literal_special_tokens_stay_text():
    """gigatoken given the file's special tokens matches them in the text (the probe catches it); the
    backend loads the file without them, and "<|endoftext|>" inside a document is encoded as text."""
    from gigatoken.gigatoken_rs import load_hf_json

    tok = shipped()
    config = json.loads(tok.tokenizer.to_str())
    enc = Encoder(tok, verify_bytes=0)
    as_given = _GigatokenBackend(_GigaModel(load_hf_json(json.dumps(config)), "?"), tok.dtype, 1)
    reason = enc._differs(as_given, probe_texts(config), "the built-in probe texts")
    assert reason and "gigatoken's ids differ" in reason
    texts = ["<|endoftext|>", "a <|endoftext|>b<|padding|>", " <|endoftext|><|endoftext|> "]
    got = enc.encode_batch(texts)
    assert [a.tolist() for a in got] == [whole_ids(tok, t) for t in texts]
    assert all((a[:-1] != tok.eos_id).all() for a in got)  # EOS only where mixprep appends it
    assert len(_without_specials(config)["added_tokens"]) == 0 < len(config["added_tokens"])


@needs_gigatoken
def test_lone_surrogates_go_to_tokenizers_as_on_the_tiktoken_path():
    """Both fast backends refuse a lone surrogate; the call goes to `tokenizers`, which decides (it
    raises TypeError; the readers reject such documents before they get here)."""
    tok = shipped()
    for backend in ("gigatoken", "tiktoken"):
        enc = Encoder(tok, backend=backend)
        with pytest.raises(UnicodeEncodeError):
            enc._fast.encode(["ok", "a\ud800b"])
        with pytest.raises(TypeError) as err:
            enc.encode_batch(["ok", "a\ud800b"])
        with pytest.raises(TypeError) as slow:
            tok.tokenizer.encode_batch_fast(["ok", "a\ud800b"], add_special_tokens=False)
        assert str(err.value) == str(slow.value)
        assert enc.backend == backend  # not a difference: the encoder keeps its backend


@needs_gigatoken
@pytest.mark.parametrize("threads", [1, 2])
def test_each_threads_tokenizer_is_renewed_and_the_ids_stay_the_same(monkeypatch, threads):
    """gigatoken's tokenizer caches what it encodes without bound (a worker's memory grew with its
    documents): each thread's is replaced after a budget of characters, with the same ids, and the
    model's own tokenizer is handed to one thread only."""
    import threading

    tok = shipped()
    model = _gigatoken_model(tok.json_bytes.decode())
    texts = [t[:5000] for t in VARIED + _sample_texts()][:300] * 3
    expected = [a.tolist() for a in _GigatokenBackend(model, tok.dtype, 1).encode(texts)]
    loads, users = [], {}
    another = _GigaModel.another

    def counted(self):
        loads.append(threading.get_ident())
        return another(self)

    monkeypatch.setattr(_GigaModel, "another", counted)
    monkeypatch.setattr(_GigatokenBackend, "RENEW_AFTER", 20_000)
    backend = _GigatokenBackend(model, tok.dtype, threads)
    encoder = backend._encoder

    def watched(cost):
        encode = encoder(cost)
        users.setdefault(id(encode.__self__), set()).add(threading.get_ident())
        return encode

    monkeypatch.setattr(backend, "_encoder", watched)
    assert [a.tolist() for a in backend.encode(texts)] == expected
    charged = sum(len(t) + backend.DOCUMENT_CHARS for t in texts)
    # renewed along the way (a budget covers at most its own and one more text's charge)
    assert len(loads) >= charged // (20_000 + 5000 + backend.DOCUMENT_CHARS) - threads > 10
    assert all(len(t) == 1 for t in users.values())  # no tokenizer encoded on two threads
    backend.close()


@needs_gigatoken
def test_nfc_is_python_s_as_on_the_tiktoken_path():
    """gigatoken loads the file without its normalizer: on its own it would not compose (so its ids
    for decomposed text differ), and the backend applies `unicodedata`'s NFC, giving `tokenizers`' ids."""
    tok = neox_like()
    model = _gigatoken_model(tok.json_bytes.decode())
    assert model.nfc and not _gigatoken_model(shipped().json_bytes.decode()).nfc
    texts = ["e\u0301", "A\u030a \u212b caf\u00e9 cafe\u0301", "\u1100\u1161\u11a8 x\u0958y q\u0307\u0323"]
    assert all(model.model.encode(t).tolist() != whole_ids(tok, t)[:-1] for t in texts)  # no NFC inside
    backend = _GigatokenBackend(model, tok.dtype, 1)
    assert [backend.encode_one(t).tolist() for t in texts] == [whole_ids(tok, t)[:-1] for t in texts]
    assert _without_specials(json.loads(tok.tokenizer.to_str()))["normalizer"] is None


def test_probe_texts_hold_what_gigatoken_does_differently():
    config = json.loads(neox_like().tokenizer.to_str())
    texts = probe_texts(config)
    assert texts[0] == PROBE_TEXT and "<|endoftext|>" in texts and "<|padding|>" in texts
    joined = "".join(texts)
    assert " " * 26 in joined and "e\u0301" in joined and "x" * 5000 in joined and "" in texts
    sample = real_sample()
    assert len(sample) > 20 and SAMPLE_BYTES * 0.9 < sum(len(t) for t in sample) <= SAMPLE_BYTES
    assert any("def " in t for t in sample) and any(not t.isascii() for t in sample)


def _encode_in_child(tok, texts: list[str], queue) -> None:
    enc = Encoder(tok, threads=2, verify_bytes=0)
    queue.put((enc.backend, [a.tolist() for a in enc.encode_batch(texts)]))
    enc.close()


@needs_gigatoken
@pytest.mark.skipif(sys.platform != "linux", reason="fork")
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_gigatoken_gets_its_threads_in_forked_and_spawned_children(start):
    """gigatoken's own batch calls run on one thread in a forked child (its rayon pool would hang);
    the backend's threads are mixprep's own, so a child built after a parent encoded gets them too."""
    tok = shipped()
    texts = VARIED * 4 + [dense_text(3_000, seed=4)]
    parent = Encoder(tok, threads=2, verify_bytes=0)
    want = [a.tolist() for a in parent.encode_batch(texts)]
    assert parent.backend == "gigatoken" and parent._fast._pool is not None
    ctx = mp.get_context(start)
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(tok, texts, queue))
    child.start()
    backend, got = queue.get(timeout=120)
    child.join(timeout=60)
    parent.close()
    assert child.exitcode == 0 and backend == "gigatoken" and got == want


# --- what a run used is recorded: cache parts and cache.json (the fingerprint does not change) -----

def _build_pile_cache(cache_root, monkeypatch, backend: str):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from conftest import SAMPLES

    from pipeline.cache import BuildCaches, TokenCache
    from pipeline.sources import SourceSpec, list_source_files

    monkeypatch.setenv("MIXPREP_ENCODER", backend)  # the in-process runner builds the DoFn's Encoder here
    spec = SourceSpec("pile", "pile", root="EleutherAI/pile", exclude=("Pile-CC",))
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"]))
    transform = BuildCaches([(spec, list_source_files(spec, SAMPLES), None)], shipped(), str(cache_root))
    _ = p | transform
    p.run().wait_until_finish()
    return TokenCache(transform.directories["pile"])


@pytest.mark.parametrize("backend", ["gigatoken", "tiktoken"])
def test_each_cache_part_records_the_backend_that_built_it(tmp_path, monkeypatch, backend):
    """Forced backends give the same fingerprint, folder and bytes; cache.json says which one built
    each part (`parts[].encoder`) and all of them (`encoders`: backend -> parts, version)."""
    if not _installed(backend):
        pytest.skip(f"{backend} not installed")
    fast = _build_pile_cache(tmp_path / backend, monkeypatch, backend)
    slow = _build_pile_cache(tmp_path / "tokenizers", monkeypatch, "tokenizers")
    assert fast.manifest["fingerprint"] == slow.manifest["fingerprint"]
    assert os.path.basename(fast.directory) == os.path.basename(slow.directory)
    key = lambda part: (part["bin_sha256"], part["idx_sha256"], part["tokens"])  # noqa: E731
    assert [key(p) for p in fast.manifest["parts"]] == [key(p) for p in slow.manifest["parts"]]
    n = len(fast.manifest["parts"])
    for cache, name in ((fast, backend), (slow, "tokenizers")):
        assert cache.manifest["encoders"] == {name: {"parts": n, "version": version(name)}}
        assert all(p["encoder"] == {"backends": [name], "backend": name, "version": version(name)}
                   for p in cache.manifest["parts"])


def test_parts_built_before_the_record_count_as_unrecorded():
    from pipeline.cache.build import encoders_of

    parts = [{"encoder": {"backends": ["gigatoken", "tokenizers"], "backend": "tokenizers", "version": "0.23.0"}},
             {"encoder": {"backends": ["gigatoken"], "backend": "gigatoken", "version": "0.10.0"}},
             {}, {"encoder": None}]
    assert encoders_of(parts) == {"gigatoken": {"parts": 2, "version": "0.10.0"},
                                  "tokenizers": {"parts": 1, "version": "0.23.0"}, "unrecorded": {"parts": 2}}


# --- character classes: gigatoken's Unicode tables are newer than tokenizers' ----------------------

def _class_probe_config() -> dict:
    """A byte-level BPE whose merges join a letter, a digit, '.' or a space before any multi-byte
    character's lead byte, and any continuation byte with a letter, digit or '.' after it: a pre-token
    boundary there shows in the ids whatever the character, so the two engines' classes can be compared."""
    from pipeline.tokenizer.fast import _byte_chars

    bc = _byte_chars()
    vocab = {bc[b]: b for b in range(256)}
    merges = [(x, bc[lead]) for x in ("a", "1", ".", bc[32]) for lead in range(0xC2, 0xF5)]
    merges += [(bc[cont], y) for cont in range(0x80, 0xC0) for y in ("a", "1", ".")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": [list(m) for m in merges]}}


@needs_gigatoken
def test_the_class_table_is_measured_for_every_code_point():
    """CLASS_DIFFERENCES for the installed gigatoken and tokenizers is exactly the set of code points
    (outside ASCII and surrogates) where the two split differently (before, after: letter, digit,
    punctuation, space)."""
    import numpy as np
    import tokenizers
    from gigatoken.gigatoken_rs import load_hf_json

    from pipeline.tokenizer.giga import CLASS_DIFFERENCES, gigatoken_version

    text = json.dumps(_class_probe_config())
    hf, giga = tokenizers.Tokenizer.from_str(text), load_hf_json(text)
    cps = [cp for cp in range(0x80, 0x110000) if not 0xD800 <= cp < 0xE000]
    context = "a{0}\n1{0}\n.{0}\n {0}\n{0}a\n{0}1\n{0}.\n"
    differ = []
    for start in range(0, len(cps), 1 << 12):
        block = cps[start:start + (1 << 12)]
        texts = ["".join(context.format(chr(cp)) for cp in block[i:i + 64]) for i in range(0, len(block), 64)]
        for k, enc in enumerate(hf.encode_batch_fast(texts, add_special_tokens=False)):
            if giga.encode(texts[k]).tolist() != enc.ids:  # find which of the 64
                group = block[k * 64:(k + 1) * 64]
                singles = [context.format(chr(cp)) for cp in group]
                want = hf.encode_batch_fast(singles, add_special_tokens=False)
                differ += [cp for cp, t, e in zip(group, singles, want) if giga.encode(t).tolist() != e.ids]
    table = CLASS_DIFFERENCES.get((gigatoken_version(), tokenizers.__version__))
    assert table is not None, f"add CLASS_DIFFERENCES[{(gigatoken_version(), tokenizers.__version__)}]: {differ}"
    assert differ == [cp for first, last in table for cp in range(first, last + 1)]
    assert len(differ) == 4657 and np.isin([0xA7CF, 0x323B0], differ).all()


@needs_gigatoken
def test_texts_with_such_characters_go_to_tokenizers():
    """Real text (a Unicode table in Python source) that gigatoken split differently before: `"꟏",`."""
    from pipeline.tokenizer.giga import NeedsReference

    tok = neox_like()
    enc = Encoder(tok, backend="gigatoken", max_call_bytes=1 << 16)
    with pytest.raises(NeedsReference):
        enc._fast.encode(["ok", '    "\ua7cf",'])
    texts = ['    "\ua7cf",\n    None,', "plain", "caf\u00e9 \U000323b0x 1\u0c5c1", "\u00e9" * 10]
    assert [a.tolist() for a in enc.encode_batch(texts)] == [whole_ids(tok, t) for t in texts]
    assert enc.backend == "gigatoken"  # not a difference: the encoder keeps its backend for other texts


@needs_gigatoken
def test_versions_the_table_was_not_measured_for_are_refused(monkeypatch, hide_packages):  # noqa: F811 (the fixture)
    from pipeline.tokenizer import giga

    hide_packages()  # clears the per-process gate caches before and after
    monkeypatch.setattr(giga, "CLASS_DIFFERENCES", {("0.0.1", "0.0.1"): ()})
    enc = Encoder(shipped())
    assert enc.backend == "tiktoken" and "have not been compared" in enc.refused["gigatoken"]
