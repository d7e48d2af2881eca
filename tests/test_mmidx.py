"""pipeline.mmidx: the golden bytes of docs/FORMAT.md, round trips, atomic writes and corrupt files."""

import hashlib
import os
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest
from conftest import fuzz_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import FormatError
from pipeline.mmidx import MMIDXReader, MMIDXWriter, ShardInfo, dtype_for_vocab, write_sequences

# docs/FORMAT.md's worked example: documents [11,12,13] and [21,22] as uint16.
GOLDEN_BIN = bytes.fromhex("0b00 0c00 0d00 1500 1600")
GOLDEN_IDX = bytes.fromhex(
    "4d4d49444944580000 0100000000000000 08 0200000000000000 0300000000000000"
    "03000000 02000000"
    "0000000000000000 0600000000000000"
    "0000000000000000 0100000000000000 0200000000000000"
)


def write(folder, sequences, dtype=np.uint16, name="x", **kwargs) -> str:
    """Write ``sequences`` as shard ``folder/name`` and return its prefix."""
    prefix = os.path.join(folder, name)
    write_sequences(prefix, sequences, dtype, **kwargs)
    return prefix


def read_all(prefix):
    with MMIDXReader(prefix) as r:
        return [r[i].tolist() for i in range(len(r))], r.document_indices.tolist(), r.dtype


def patch(path, offset, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def open_error(prefix) -> str:
    with pytest.raises(FormatError) as e:
        MMIDXReader(prefix)
    return str(e.value)


def test_golden_bytes(tmp_path):
    prefix = write(tmp_path, [[11, 12, 13], [21, 22]])
    assert (tmp_path / "x.bin").read_bytes() == GOLDEN_BIN
    assert len(GOLDEN_IDX) == 82
    assert (tmp_path / "x.idx").read_bytes() == GOLDEN_IDX
    assert read_all(prefix) == ([[11, 12, 13], [21, 22]], [0, 1, 2], np.dtype(np.uint16))


def test_megatron_document_mode(tmp_path):
    prefix = os.path.join(tmp_path, "x")
    with MMIDXWriter(prefix, np.uint16, one_document_per_sequence=False) as w:
        w.add([1, 2])
        w.add([3])
        w.end_document()
        w.add([4])  # left open: close() ends the last document
    assert w.close().documents == 2
    assert read_all(prefix)[1] == [0, 2, 3]


@pytest.mark.parametrize(
    "vocab_size, dtype",
    [(1, np.uint16), (8192, np.uint16), (50257, np.uint16), (50277, np.uint16), (65499, np.uint16),
     (65500, np.int32), (100277, np.int32)],
)
def test_dtype_for_vocab(vocab_size, dtype):
    """The one dtype rule (load_tokenizer sizes a tokenizer's ids with it too)."""
    assert dtype_for_vocab(vocab_size) == np.dtype(dtype)


def test_int32_round_trip_above_uint16(tmp_path):
    dtype = dtype_for_vocab(200_000)
    seqs = [[0, 65535, 65536, 199_999], [2**31 - 1], []]
    prefix = write(tmp_path, seqs, dtype)
    assert read_all(prefix) == (seqs, [0, 1, 2, 3], np.dtype(np.int32))
    assert (tmp_path / "x.idx").read_bytes()[17] == 4  # Megatron's code for int32


@pytest.mark.parametrize("bad", [[65536], [-1], [0, 70000], np.array([1.0, 2.0]), [[1, 2]]])
def test_out_of_range_or_malformed_tokens_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        with MMIDXWriter(os.path.join(tmp_path, "x"), np.uint16) as w:
            w.add(bad)
    assert os.listdir(tmp_path) == []


def test_writer_refuses_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="uint16 or int32"):
        MMIDXWriter(os.path.join(tmp_path, "x"), np.float32)


def test_temp_names_until_close(tmp_path):
    w = MMIDXWriter(os.path.join(tmp_path, "x"), np.uint16)
    w.add([1, 2, 3])
    names = os.listdir(tmp_path)
    assert len(names) == 1 and names[0].startswith("x.bin.tmp-")
    w.close()
    assert sorted(os.listdir(tmp_path)) == ["x.bin", "x.idx"]
    with pytest.raises(ValueError, match="closed"):
        w.add([4])


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with MMIDXWriter(os.path.join(tmp_path, "x"), np.uint16) as w:
            w.add([1, 2, 3])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_shard_info_hashes_and_sizes(tmp_path):
    prefix = os.path.join(tmp_path, "x")
    info = write_sequences(prefix, [[1, 2, 3], [], [4]], np.uint16)
    bin_bytes, idx_bytes = (tmp_path / "x.bin").read_bytes(), (tmp_path / "x.idx").read_bytes()
    assert info == ShardInfo(
        prefix=prefix, sequences=3, documents=3, tokens=4, dtype="uint16",
        bin_sha256=hashlib.sha256(bin_bytes).hexdigest(),
        idx_sha256=hashlib.sha256(idx_bytes).hexdigest(),
        bin_bytes=len(bin_bytes), idx_bytes=len(idx_bytes),
    )
    assert info.to_dict()["idx_sha256"] == info.idx_sha256


def test_reader_api(tmp_path):
    with MMIDXReader(write(tmp_path, [[1, 2, 3], [], [4, 5]])) as r:
        assert len(r) == 3 and r.num_tokens == 5 and r.num_documents == 3
        assert r[-1].tolist() == [4, 5] and r[1].size == 0
        assert r.get(0, offset=1).tolist() == [2, 3] and r.get(0, 1, 1).tolist() == [2]
        assert not r[0].flags.writeable and r[0].base is not None  # a view, not a copy
        assert r.sequence_lengths.tolist() == [3, 0, 2]
        assert r.sequence_pointers.tolist() == [0, 6, 6]
        for bad in (3, -4):
            with pytest.raises(IndexError):
                r[bad]
        with pytest.raises(IndexError):
            r.get(0, 2, 5)
        view = r[0]
    assert view.tolist() == [1, 2, 3]  # still valid after close


def sequences_for(dtype):
    info = np.iinfo(dtype)
    tokens = st.integers(int(info.min), int(info.max))
    return st.lists(st.lists(tokens, max_size=12), max_size=25)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.uint16, np.int32]), data=st.data())
def test_round_trip_property(dtype, data):
    seqs = data.draw(sequences_for(dtype))
    with tempfile.TemporaryDirectory() as d:
        assert read_all(write(d, seqs, dtype)) == (seqs, list(range(len(seqs) + 1)), np.dtype(dtype))


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(st.lists(st.integers(0, 65535), max_size=5), max_size=4), max_size=8))
def test_document_boundaries_property(docs):
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "x")
        with MMIDXWriter(prefix, np.uint16, one_document_per_sequence=False) as w:
            for doc in docs:
                for seq in doc:
                    w.add(seq)
                w.end_document()
        seqs, indices, _ = read_all(prefix)
    assert seqs == [s for doc in docs for s in doc]
    assert indices == np.cumsum([0] + [len(doc) for doc in docs]).tolist()


# --- Corrupt files: every problem is a FormatError naming the file, what was expected, what found. ---

VALID = [[11, 12, 13], [21, 22], [31]]  # S = 3, D = 4: idx = 34 + 36 + 32 = 102 bytes
S_AT, D_AT, LENGTHS_AT, POINTERS_AT, DOCS_AT = 18, 26, 34, 34 + 12, 34 + 36


@pytest.fixture
def shard(tmp_path):
    return write(tmp_path, VALID)


def test_truncated_bin(shard):
    os.truncate(shard + ".bin", 10)
    msg = open_error(shard)
    assert "x.bin" in msg and "at least 12 bytes" in msg and "10 bytes" in msg and "truncated" in msg


def test_bin_with_extra_bytes(shard):
    with open(shard + ".bin", "ab") as f:
        f.write(b"\x00\x00")
    msg = open_error(shard)
    assert "x.bin" in msg and "12 bytes" in msg and "14 bytes" in msg and "extra bytes" in msg


def test_bad_magic(shard):
    patch(shard + ".idx", 0, b"GARBAGE!!")
    msg = open_error(shard)
    assert "x.idx" in msg and "MMIDIDX" in msg and "GARBAGE" in msg and "Megatron" in msg


def test_wrong_version(shard):
    patch(shard + ".idx", 9, struct.pack("<Q", 2))
    msg = open_error(shard)
    assert "x.idx" in msg and "version 1" in msg and "version 2" in msg


@pytest.mark.parametrize("code", [6, 7])
def test_float_dtype_code(shard, code):
    patch(shard + ".idx", 17, bytes([code]))
    msg = open_error(shard)
    assert "x.idx" in msg and "integer" in msg and f"code {code}" in msg and "float" in msg


def test_unknown_dtype_code(shard):
    patch(shard + ".idx", 17, bytes([9]))
    assert "code 9" in open_error(shard)


def test_idx_shorter_than_header(shard):
    os.truncate(shard + ".idx", 20)
    msg = open_error(shard)
    assert "x.idx" in msg and "at least 34 bytes" in msg and "20 bytes" in msg


def test_s_too_large_for_file(shard):
    patch(shard + ".idx", S_AT, struct.pack("<Q", 2**40))
    msg = open_error(shard)
    assert "x.idx" in msg and f"S={2**40}" in msg and "102 bytes" in msg


def test_d_inconsistent_with_file(shard):
    patch(shard + ".idx", D_AT, struct.pack("<Q", 5))
    msg = open_error(shard)
    assert "x.idx" in msg and "D=5" in msg and "102 bytes" in msg


def test_d_zero(shard):
    patch(shard + ".idx", D_AT, struct.pack("<Q", 0))
    assert "D >= 1" in open_error(shard)


def test_pointers_not_matching_lengths(shard):
    patch(shard + ".idx", POINTERS_AT + 8, struct.pack("<q", 4))
    msg = open_error(shard)
    assert "x.idx" in msg and "pointer 6 for sequence 1" in msg and "found pointer 4" in msg


def test_negative_length(shard):
    patch(shard + ".idx", LENGTHS_AT + 4, struct.pack("<i", -2))
    msg = open_error(shard)
    assert "x.idx" in msg and "lengths >= 0" in msg and "sequence 1" in msg


def test_document_indices_not_ending_at_s(shard):
    patch(shard + ".idx", DOCS_AT + 24, struct.pack("<q", 2))
    msg = open_error(shard)
    assert "x.idx" in msg and "document_indices[-1] == S == 3" in msg and "found 2" in msg


def test_document_indices_not_starting_at_zero(shard):
    patch(shard + ".idx", DOCS_AT, struct.pack("<q", 1))
    assert "document_indices[0] == 0" in open_error(shard)


def test_document_indices_decreasing(shard):
    patch(shard + ".idx", DOCS_AT + 8, struct.pack("<q", 3))  # [0, 3, 2, 3]
    msg = open_error(shard)
    assert "non-decreasing" in msg and "document_indices[1] = 3" in msg


@pytest.mark.parametrize("ext", [".bin", ".idx"])
def test_missing_file(shard, ext):
    os.remove(shard + ext)
    msg = open_error(shard)
    assert f"x{ext}" in msg and "no such file" in msg


@settings(max_examples=fuzz_examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seqs=st.lists(st.lists(st.integers(0, 65535), max_size=6), max_size=6),
    target=st.sampled_from([".idx", ".bin"]),
    data=st.data(),
)
def test_corruption_never_escapes_as_another_error(seqs, target, data):
    with tempfile.TemporaryDirectory() as d:
        prefix = write(d, seqs)
        path = prefix + target
        raw = bytearray(open(path, "rb").read())
        mode = data.draw(st.sampled_from(["flip", "truncate", "append"]))
        if mode == "flip" and raw:
            for _ in range(data.draw(st.integers(1, 4))):
                raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        elif mode == "truncate":
            del raw[data.draw(st.integers(0, len(raw))):]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=16))
        with open(path, "wb") as f:
            f.write(raw)
        try:
            reader = MMIDXReader(prefix)
        except FormatError:
            return
        with reader:
            bin_tokens = os.path.getsize(prefix + ".bin") // reader.dtype.itemsize
            assert int(reader.sequence_lengths.sum()) == reader.num_tokens == bin_tokens
            for i in range(len(reader)):
                assert reader[i].size == reader.sequence_lengths[i]


@pytest.mark.slow
def test_memory_does_not_grow_with_entries(tmp_path):
    n, tokens = 2_000_000, np.array([7], dtype=np.uint16)
    tracemalloc.start()
    try:
        with MMIDXWriter(os.path.join(tmp_path, "x"), np.uint16) as w:
            for _ in range(n):
                w.add(tokens)
        info = w.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Lengths and pointers held in memory would be 24 MB even as packed arrays (~3.6 MB seen).
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert info.sequences == n and info.idx_bytes == 34 + 12 * n + 8 * (n + 1)
    with MMIDXReader(info.prefix) as r:
        assert len(r) == n and r[n - 1].tolist() == [7] and r.document_indices[-1] == n


def test_released_pages_read_back_the_same(tmp_path):
    """release_pages drops the mapping's resident pages (the pack stage's memory bound), never data."""
    seqs = [np.arange(n, dtype=np.uint16) % 7000 for n in (1, 5000, 70_000, 3)]
    write_sequences(str(tmp_path / "d"), seqs, np.uint16)
    with MMIDXReader(str(tmp_path / "d")) as r:
        views = [r[i] for i in range(len(seqs))]
        before = [v.copy() for v in views]
        r.release_pages()
        assert all(np.array_equal(v, b) for v, b in zip(views, before))  # views handed out stay valid
        assert all(np.array_equal(r[i], s) for i, s in enumerate(seqs))
