"""The Megatron / GPT-NeoX ``MMIDIDX`` token format: write it, read it, check it.

A shard is a pair ``PREFIX.bin`` (token ids back to back) and ``PREFIX.idx`` (header, sequence lengths,
byte pointers, document boundaries); docs/FORMAT.md has the byte layout. Megatron-LM, NeMo and
GPT-NeoX (``data-impl: mmap``) read these files unchanged.

Write a shard without holding it in memory::

    with MMIDXWriter("out/stage1-00000-of-00004", dtype_for_vocab(50257)) as w:
        for tokens in documents:
            w.add(tokens)          # one sequence; by default also one document
    info = w.close()               # ShardInfo: counts, sizes, sha256 of both files

Read it back (every invariant is checked before any token is exposed)::

    with MMIDXReader("out/stage1-00000-of-00004") as r:
        first = r[0]               # zero-copy, read-only numpy view into the memory-mapped .bin

Files appear under their final names only when a writer closes cleanly: a failed or aborted writer
leaves nothing behind. A reader raises :class:`~pipeline.errors.FormatError` naming the file, what it
expected and what it found, for any file that is not a well-formed pair.
"""

import contextlib
import dataclasses
import hashlib
import mmap
import operator
import os
import secrets
import struct
import tempfile

import numpy as np

from pipeline import storage
from pipeline.crashpoints import crash_point
from pipeline.errors import FormatError, OutputError

__all__ = ["ShardInfo", "MMIDXWriter", "MMIDXReader", "dtype_for_vocab", "write_sequences"]

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, S, D: 34 bytes, no padding
# Megatron-core's codes. GPT-NeoX swaps 6 and 7, so float codes are refused on read.
_READ_DTYPES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 8: "<u2"}
_FLOAT_CODES = {6: "float64", 7: "float32"}
_WRITE_CODES = {np.dtype("<u2"): 8, np.dtype("<i4"): 4}
_MAX_SEQUENCE = np.iinfo(np.int32).max  # lengths are stored as int32
_CHUNK = 1 << 16  # entries per in-memory chunk of lengths / indices: 256 KiB / 512 KiB
_BUFFER_BYTES = 1 << 20  # token bytes buffered before one hash update + write


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The token dtype Megatron picks for a vocabulary: uint16 below 65,500 ids, else int32.

    The project's one dtype rule: `pipeline.tokenizer` sizes a tokenizer's ids with it too.

    >>> dtype_for_vocab(50257), dtype_for_vocab(100277)
    (dtype('uint16'), dtype('int32'))
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """What a closed writer produced; ``to_dict()`` is the shard's manifest entry."""

    prefix: str
    sequences: int
    documents: int
    tokens: int
    dtype: str
    bin_sha256: str
    idx_sha256: str
    bin_bytes: int
    idx_bytes: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- File I/O: the only code that touches paths, so it can later go through Beam's FileSystems. ---


def _open(path: str, mode: str):
    return storage.open_write(path)  # mode is always "wb"; local paths or any Beam filesystem


def _rename(src: str, dst: str) -> None:
    storage.rename(src, dst)  # atomic locally; on object stores the final object appears whole


def _delete(path: str) -> None:
    storage.delete(path)


def _map_readonly(path: str, what: str):
    """Memory-map ``path`` read-only (an empty file maps to ``b""``, which mmap cannot do).

    A remote ``.idx`` is read into memory; a remote ``.bin`` is read by ranges (``_RemoteBlob``).
    """
    if storage.is_remote(path):
        try:
            if what == ".idx":
                with storage.open_read(path) as f:
                    return f.read()
            return _RemoteBlob(path)
        except Exception as e:  # BeamIOError, or the store's own errors
            raise FormatError(f"{path}: expected a readable {what} file, found an error: {e}") from e
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise FormatError(
            f"{path}: expected the {what} file of an MMIDIDX pair, found no such file "
            "(pass the shard prefix, without .bin/.idx)"
        ) from None
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: expected a readable {what} file, found an error: {e}") from e


class _RemoteBlob:
    """A ``.bin`` on an object store: its size, and byte ranges read on demand.

    Reads go through a small cache of aligned blocks, so nearby sequences cost one request.
    """

    BLOCK = 1 << 21  # 2 MiB
    BLOCKS = 4  # at most 8 MiB cached per open file

    def __init__(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        (match,) = FileSystems.match([path])
        if not match.metadata_list:
            raise FileNotFoundError(path)
        self.path, self._size, self._f = path, match.metadata_list[0].size_in_bytes, None
        self._blocks: dict[int, bytes] = {}  # insertion order = least recently used first

    def __len__(self) -> int:
        return self._size

    def _block(self, k: int) -> bytes:
        if k in self._blocks:
            self._blocks[k] = self._blocks.pop(k)
            return self._blocks[k]
        if self._f is None:
            self._f = storage.open_read(self.path)
        self._f.seek(k * self.BLOCK)
        data = self._f.read(min(self.BLOCK, self._size - k * self.BLOCK))
        if len(self._blocks) >= self.BLOCKS:
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[k] = data
        return data

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self._size:
            raise FormatError(f"{self.path}: range [{offset}, {offset + n}) outside its {self._size} bytes")
        parts = []
        while n > 0:
            k, at = divmod(offset, self.BLOCK)
            chunk = self._block(k)[at:at + n]
            parts.append(chunk)
            offset, n = offset + len(chunk), n - len(chunk)
        return b"".join(parts)

    def read_through(self, offset: int, n: int) -> bytes:
        """Bytes ``offset : offset + n`` read past the block cache. Reads that each start where the
        last one ended continue one request (Beam's S3 reader keeps its ranged GET open)."""
        if offset < 0 or offset + n > self._size:
            raise FormatError(f"{self.path}: range [{offset}, {offset + n}) outside its {self._size} bytes")
        if self._f is None:
            self._f = storage.open_read(self.path)
        if self._f.tell() != offset:
            self._f.seek(offset)
        return self._f.read(n)

    def close(self) -> None:
        self._blocks.clear()
        if self._f is not None:
            self._f.close()


class _HashingSink:
    """Buffered binary writer that computes the sha256 of everything it writes."""

    def __init__(self, f):
        self._f, self._sha, self._buf, self.nbytes = f, hashlib.sha256(), bytearray(), 0

    def write(self, data) -> None:
        self._buf += memoryview(data).cast("B")
        if len(self._buf) >= _BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        self._sha.update(self._buf)
        self._f.write(self._buf)
        self.nbytes += len(self._buf)
        self._buf.clear()

    def close(self) -> str:
        """Flush, close the file and return the hex sha256."""
        self.flush()
        self._f.close()
        return self._sha.hexdigest()


class _SpillArray:
    """Append-only array kept on disk past one bounded in-memory chunk (Megatron-LM#444: no lists)."""

    def __init__(self, dtype: str, spill_dir):
        self._chunk = np.empty(_CHUNK, dtype)
        self._file = tempfile.TemporaryFile(prefix="mixprep-mmidx-", dir=spill_dir)  # unlinked already
        self._n = 0
        self.count = 0
        self.last = None

    def append(self, value: int) -> None:
        self._chunk[self._n] = value
        self._n += 1
        self.count += 1
        self.last = value
        if self._n == _CHUNK:
            self._file.write(self._chunk.data)
            self._n = 0

    def chunks(self):
        """Yield every value in order, at most one chunk at a time (repeatable)."""
        self._file.seek(0)
        while data := self._file.read(_CHUNK * self._chunk.itemsize):
            yield np.frombuffer(data, self._chunk.dtype)
        if self._n:
            yield self._chunk[: self._n]

    def close(self) -> None:
        self._file.close()


def _as_tokens(tokens, dtype: np.dtype) -> np.ndarray:
    """``tokens`` as a contiguous 1-D array of ``dtype``; ValueError rather than a silent wrap."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of token ids, found shape {arr.shape}")
    if arr.dtype == dtype:
        return np.ascontiguousarray(arr)
    if arr.size == 0:
        return np.empty(0, dtype)  # np.asarray([]) is float64
    if arr.dtype.kind not in "iu":
        raise ValueError(f"expected integer token ids, found dtype {arr.dtype}")
    if not np.can_cast(arr.dtype, dtype):
        info, lo, hi = np.iinfo(dtype), int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise ValueError(
                f"token id {bad} does not fit {dtype} (range {info.min}..{info.max}); "
                "pick the dtype with dtype_for_vocab(vocab_size)"
            )
    return arr.astype(dtype)


class MMIDXWriter:
    """Stream sequences into one ``PREFIX.bin``/``PREFIX.idx`` pair in bounded memory.

    Args:
      prefix: output path without extension.
      dtype: token dtype, uint16 or int32 (see :func:`dtype_for_vocab`).
      one_document_per_sequence: if True (default) every :meth:`add` is a whole document. If False,
        Megatron's builder semantics: :meth:`add` appends sequences to the current document and
        :meth:`end_document` closes it; sequences left open at :meth:`close` form a last document.
      spill_dir: where the anonymous side files of lengths and document indices go (default: the
        system temp dir); they cost 12 bytes per sequence and vanish when the writer ends.
    """

    def __init__(self, prefix, dtype, *, one_document_per_sequence: bool = True, spill_dir=None):
        self.prefix = os.fspath(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _WRITE_CODES:
            raise ValueError(f"MMIDXWriter writes uint16 or int32 tokens, not {self.dtype}")
        self.one_document_per_sequence = one_document_per_sequence
        self._lengths = _SpillArray("<i4", spill_dir)
        self._docs = _SpillArray("<i8", spill_dir)
        self._docs.append(0)
        suffix = f".tmp-{secrets.token_hex(6)}"
        self._bin_tmp, self._idx_tmp = self.prefix + ".bin" + suffix, self.prefix + ".idx" + suffix
        try:
            self._bin = _HashingSink(_open(self._bin_tmp, "wb"))
        except OSError as e:
            self._release()
            raise OutputError(self._bin_tmp, e) from e
        except BaseException:
            self._release()
            raise
        self._tokens = 0
        self._state = "open"  # -> "closed" (files renamed into place) | "aborted" (files deleted)
        self._info = None

    def add(self, tokens) -> None:
        """Append one sequence (any 1-D integer array-like whose values fit the dtype)."""
        self._check_open()
        arr = _as_tokens(tokens, self.dtype)
        if arr.size > _MAX_SEQUENCE:
            raise ValueError(f"a sequence of {arr.size} tokens exceeds the int32 length field")
        try:
            self._bin.write(arr)
        except OSError as e:  # e.g. no space left: drop the temp files, say which shard
            self.abort()
            raise OutputError(self.prefix + ".bin", e) from e
        self._lengths.append(arr.size)
        self._tokens += arr.size
        if self.one_document_per_sequence:
            self._docs.append(self._lengths.count)

    def end_document(self) -> None:
        """Close the current document (a no-op when every sequence is its own document)."""
        self._check_open()
        if not self.one_document_per_sequence:
            self._docs.append(self._lengths.count)

    def close(self) -> ShardInfo:
        """Write the .idx, move both files to their final names (.bin first) and describe them."""
        if self._state == "closed":
            return self._info
        self._check_open()
        try:
            if self._docs.last != self._lengths.count:
                self._docs.append(self._lengths.count)
            bin_sha = self._bin.close()
            idx_sha, idx_bytes = self._write_idx()
            _rename(self._bin_tmp, self.prefix + ".bin")
            crash_point(f"mmidx-rename:{os.path.basename(self.prefix)}")
            _rename(self._idx_tmp, self.prefix + ".idx")
        except OSError as e:
            self.abort()
            raise OutputError(self.prefix + ".bin/.idx", e) from e
        except BaseException:
            self.abort()
            raise
        self._release()
        self._state = "closed"
        self._info = ShardInfo(
            prefix=self.prefix, sequences=self._lengths.count, documents=self._docs.count - 1,
            tokens=self._tokens, dtype=self.dtype.name, bin_sha256=bin_sha, idx_sha256=idx_sha,
            bin_bytes=self._bin.nbytes, idx_bytes=idx_bytes,
        )
        return self._info

    def abort(self) -> None:
        """Discard the shard: close and delete the temporary files. No final file is created."""
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(OSError, ValueError):
            self._bin.close()
        self._release()
        _delete(self._bin_tmp)
        _delete(self._idx_tmp)

    def _write_idx(self):
        itemsize = self.dtype.itemsize
        with _open(self._idx_tmp, "wb") as f:
            idx = _HashingSink(f)
            idx.write(_HEADER.pack(_MAGIC, _VERSION, _WRITE_CODES[self.dtype], self._lengths.count,
                                   self._docs.count))
            for lengths in self._lengths.chunks():
                idx.write(lengths)
            offset = 0  # running token offset: pointers are computed one chunk at a time
            for lengths in self._lengths.chunks():
                ends = np.cumsum(lengths, dtype=np.int64) + offset
                idx.write((ends - lengths) * itemsize)
                offset = int(ends[-1])
            for docs in self._docs.chunks():
                idx.write(docs)
            return idx.close(), idx.nbytes

    def _release(self) -> None:
        self._lengths.close()
        self._docs.close()

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"MMIDXWriter({self.prefix!r}) is already {self._state}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_sequences(prefix, sequences, dtype, **kwargs) -> ShardInfo:
    """Write an iterable of token sequences as one shard, one document each (by default)."""
    with MMIDXWriter(prefix, dtype, **kwargs) as w:
        for seq in sequences:
            w.add(seq)
    return w.close()


def _fail(path: str, expected: str, found: str, hint: str = ""):
    raise FormatError(f"{path}: expected {expected}, found {found}" + (f" — {hint}" if hint else ""))


_CHECK_CHUNK = 1 << 20  # entries validated per vectorised step


class MMIDXReader:
    """Read-only, memory-mapped view of one ``PREFIX.bin``/``PREFIX.idx`` pair.

    Opening validates the whole index against the .bin (header, sizes, every pointer, document
    boundaries) and raises FormatError on the first problem, so indexing afterwards cannot read out of
    bounds. ``reader[i]`` returns a zero-copy read-only numpy view; it stays valid after ``close()``
    (the mapping is released once no view refers to it).
    """

    def __init__(self, prefix, *, check: bool = True):
        """``check=False`` skips the per-entry checks of pointers and document boundaries (header and
        sizes are still checked): for a file opened again and again whose reads stay bounds-checked
        (``span``, ``take``: numpy slices, or ranges of a remote ``.bin``)."""
        self.prefix = os.fspath(prefix)
        self.idx_path, self.bin_path = self.prefix + ".idx", self.prefix + ".bin"
        self._idx_map = self._bin_map = b""
        try:
            self._idx_map = _map_readonly(self.idx_path, ".idx")
            self._bin_map = _map_readonly(self.bin_path, ".bin")
            self._parse(check)
        except BaseException:
            self.close()
            raise

    def _parse(self, check: bool = True) -> None:
        idx, path = self._idx_map, self.idx_path
        if len(idx) < _HEADER.size:
            _fail(path, f"at least {_HEADER.size} bytes (the header)", f"{len(idx)} bytes",
                  "the file is truncated")
        magic, version, code, n, d = _HEADER.unpack_from(idx, 0)
        if magic != _MAGIC:
            _fail(path, f"magic {_MAGIC!r}", f"{magic!r}", "is this a Megatron/GPT-NeoX mmap dataset?")
        if version != _VERSION:
            _fail(path, f"version {_VERSION}", f"version {version}")
        if code in _FLOAT_CODES:
            _fail(path, "an integer token dtype code (1-5 or 8)",
                  f"code {code} ({_FLOAT_CODES[code]} in Megatron; GPT-NeoX swaps 6 and 7)",
                  "token files never hold floats")
        if code not in _READ_DTYPES:
            _fail(path, "a dtype code in 1-5 or 8", f"code {code}")
        self.dtype = np.dtype(_READ_DTYPES[code])
        size = _HEADER.size + 12 * n + 8 * d
        if d < 1:
            _fail(path, "a document index of at least one entry (D >= 1)", f"D = {d}")
        if size != len(idx):
            _fail(path, f"{size} bytes for S={n} sequences and D={d} (34 + 12*S + 8*D)",
                  f"{len(idx)} bytes", "the file is truncated or its header is damaged")
        self._lengths = np.frombuffer(idx, "<i4", n, _HEADER.size)
        self._pointers = np.frombuffer(idx, "<i8", n, _HEADER.size + 4 * n)
        self._docs = np.frombuffer(idx, "<i8", d, _HEADER.size + 12 * n)
        if check:
            self.num_tokens = self._check_pointers()
            self._check_documents()
        elif len(self._bin_map) % self.dtype.itemsize:
            _fail(self.bin_path, f"a whole number of {self.dtype.name} tokens", f"{len(self._bin_map)} bytes")
        else:
            self.num_tokens = len(self._bin_map) // self.dtype.itemsize
        self._tokens = None if isinstance(self._bin_map, _RemoteBlob) else np.frombuffer(self._bin_map, self.dtype)

    def _check_pointers(self) -> int:
        """Check lengths >= 0 and pointers == running byte offsets; return the token count."""
        itemsize, path = self.dtype.itemsize, self.idx_path
        available = len(self._bin_map) // itemsize  # bounds the running sum: no int64 overflow
        total = 0
        for start in range(0, len(self._lengths), _CHECK_CHUNK):
            lengths = self._lengths[start:start + _CHECK_CHUNK].astype(np.int64)
            if (neg := np.flatnonzero(lengths < 0)).size:
                i = start + int(neg[0])
                _fail(path, "sequence lengths >= 0", f"length {lengths[neg[0]]} for sequence {i}")
            ends = np.cumsum(lengths) + total
            expected = (ends - lengths) * itemsize
            found = self._pointers[start:start + _CHECK_CHUNK]
            if (bad := np.flatnonzero(found != expected)).size:
                j = int(bad[0])
                _fail(path, f"pointer {expected[j]} for sequence {start + j} (the running sum of "
                      f"lengths x {itemsize} bytes)", f"pointer {found[j]}",
                      "pointers do not match lengths")
            total = int(ends[-1])
            if total > available:
                break  # reported below as a short .bin
        if total * itemsize != len(self._bin_map):
            short = total > available
            _fail(self.bin_path, f"{'at least ' if short else ''}{total * itemsize} bytes "
                  f"({total} tokens of {self.dtype.name}, as {self.idx_path} lists)",
                  f"{len(self._bin_map)} bytes",
                  f"the .bin is {'truncated' if short else 'longer (extra bytes)'}, "
                  "or the two files are not a pair")
        return total

    def _check_documents(self) -> None:
        docs, n, path = self._docs, len(self._lengths), self.idx_path
        if docs[0] != 0:
            _fail(path, "document_indices[0] == 0", f"{docs[0]}")
        if docs[-1] != n:
            _fail(path, f"document_indices[-1] == S == {n}", f"{docs[-1]}",
                  "document indices do not end at the number of sequences")
        for start in range(0, len(docs) - 1, _CHECK_CHUNK):
            step = np.diff(docs[start:start + _CHECK_CHUNK + 1])
            if (bad := np.flatnonzero(step < 0)).size:
                i = start + int(bad[0])
                _fail(path, "non-decreasing document indices",
                      f"document_indices[{i}] = {docs[i]} > document_indices[{i + 1}] = {docs[i + 1]}")

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i) -> np.ndarray:
        i, n = operator.index(i), len(self._lengths)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence {i} out of range for {n} sequences in {self.prefix}")
        if self._tokens is None:  # remote .bin: one range read
            n_bytes = int(self._lengths[i]) * self.dtype.itemsize
            return np.frombuffer(self._bin_map.read(int(self._pointers[i]), n_bytes), self.dtype)
        start = int(self._pointers[i]) // self.dtype.itemsize
        return self._tokens[start:start + int(self._lengths[i])]

    def span(self, first: int, last: int) -> np.ndarray:
        """The tokens of sequences ``first`` to ``last`` (inclusive), back to back, in one read:
        a view of the mapping, or (remote) one ranged read that continues the previous span's."""
        n = len(self._lengths)
        if not 0 <= first <= last < n:
            raise IndexError(f"sequences {first}..{last} out of range for {n} sequences in {self.prefix}")
        itemsize = self.dtype.itemsize
        start = int(self._pointers[first])
        end = int(self._pointers[last]) + int(self._lengths[last]) * itemsize
        if self._tokens is None:
            return np.frombuffer(self._bin_map.read_through(start, end - start), self.dtype)
        return self._tokens[start // itemsize:end // itemsize]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The tokens of ``rows`` (any order), back to back, gathered from the local mapping in one
        step (8 bytes of index a token: pass rows by the million tokens, not a whole file's)."""
        if self._tokens is None:
            return np.concatenate([self[int(i)] for i in rows]) if len(rows) else np.empty(0, self.dtype)
        lengths = self._lengths[rows].astype(np.int64)
        begin = self._pointers[rows] // self.dtype.itemsize
        within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self._tokens[np.repeat(begin, lengths) + within]

    def get(self, i, offset: int = 0, length=None) -> np.ndarray:
        """Tokens ``offset : offset + length`` of sequence ``i`` (to its end if length is None)."""
        seq = self[i]
        length = len(seq) - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > len(seq):
            raise IndexError(f"span [{offset}, {offset + length}) outside sequence {i} of {len(seq)}")
        return seq[offset:offset + length]

    @property
    def sequence_lengths(self) -> np.ndarray:
        return self._lengths

    @property
    def sequence_pointers(self) -> np.ndarray:
        return self._pointers

    @property
    def document_indices(self) -> np.ndarray:
        return self._docs

    @property
    def num_documents(self) -> int:
        return len(self._docs) - 1

    def release_pages(self) -> None:
        """Drop the token file's pages this process has touched from its resident memory.

        They stay in the page cache and fault back in on the next read; without this, a process
        reading scattered documents of large caches (a shard writer) keeps them all resident.
        """
        if isinstance(self._bin_map, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            self._bin_map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Drop this reader's references to the mappings; views already handed out stay valid."""
        empty = np.empty(0, np.int64)
        self._lengths = self._pointers = self._docs = empty
        self._tokens = np.empty(0, getattr(self, "dtype", np.uint16))
        for name in ("_idx_map", "_bin_map"):
            with contextlib.suppress(BufferError, AttributeError):  # BufferError: a view is alive
                getattr(self, name).close()
            setattr(self, name, b"")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
