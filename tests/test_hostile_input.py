"""Hostile input for every format: each bad record rejected and counted, each broken file named,
each path that is no file (dangling or looping link, folder, pipe, socket, device) refused by name,
and the manifest's accounting exact: read = selected + dropped by sampling + rejected + excluded, and
files matched = files read + files refused."""

import gzip
import json
import os
import socket
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import ROOT, TOKENIZER

from pipeline.cache import TokenCache
from pipeline.config import load_mixture
from pipeline.errors import SourceError
from pipeline.mix.plan import PlanError
from pipeline.mixture import run_mixture
from pipeline.tokenizer import load_tokenizer

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
GOOD = [f"Document number {i} says something ordinary about rivers, maps and the weather." for i in range(40)]
EXACT = "  leading and trailing whitespace, a tab\t, CRLF\r\n, a NUL \x00 and \u00e9 / e\u0301  \n"


def jsonl(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def good_lines(offset=0):
    return [json.dumps({"text": t, "id": offset + i}).encode() for i, t in enumerate(GOOD)]


def hostile_corpus(root):
    """Writes the corpus; returns the expected rejects per reason and the corrupt files."""
    os.makedirs(root / "data", exist_ok=True)
    bad = [
        b'{"text": "unterminated',  # malformed_json
        b'{"text": 42}', b'{"text": ["a", "list"]}', b'{"text": {"a": 1}}',  # wrong_type x3
        b'{"body": "no text field"}', b'{"text": null}',  # missing_text x2
        b'{"text": "bad \xff\xfe bytes"}',  # invalid_utf8
        b'{"text": "lone \\ud800 surrogate"}',  # invalid_utf8 (cannot be encoded)
        b'{"text": "raw \x00 NUL"}',  # malformed_json: a raw control character inside a string
        b'{"text": "   \\t\\n  "}', b'{"text": ""}',  # empty_text x2
        b'[1, 2, 3]',  # malformed_json: not an object
        b"",  # blank_line
        b'{"text": "' + b"x" * (50 << 20),  # a 50 MB single line, never terminated: malformed_json
        json.dumps({"text": EXACT}).encode(),  # kept exactly as written
    ]
    (root / "data" / "a.jsonl").write_bytes(jsonl(good_lines() + bad))
    (root / "data" / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(good_lines(100))))
    (root / "data" / "c.json.gz").write_bytes(gzip.compress(jsonl(good_lines(200)), mtime=0))
    (root / "data" / "empty.jsonl").write_bytes(b"")
    (root / "data" / "empty.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b""))
    (root / "data" / "empty.json.gz").write_bytes(gzip.compress(b"", mtime=0))
    full = zstandard.ZstdCompressor().compress(jsonl(good_lines(300) * 20))
    (root / "data" / "truncated.jsonl.zst").write_bytes(full[: len(full) // 2])
    full = gzip.compress(jsonl(good_lines(400) * 20), mtime=0)
    (root / "data" / "truncated.json.gz").write_bytes(full[: len(full) // 2])
    pq.write_table(pa.table({"text": GOOD[:5] + [None, "", " "], "id": list(range(8))}), root / "data" / "d.parquet")
    pq.write_table(pa.table({"content": GOOD[:5]}), root / "data" / "missing-column.parquet")
    (root / "data" / "not-parquet.parquet").write_bytes(b"PAR1 this is not a parquet file")
    rejected = {"malformed_json": 4, "wrong_type": 3, "missing_text": 3, "invalid_utf8": 2, "empty_text": 4,
                "blank_line": 1}
    corrupt = {"data/truncated.jsonl.zst", "data/truncated.json.gz", "data/missing-column.parquet",
               "data/not-parquet.parquet"}
    return rejected, corrupt


BOM = "\ufeff"
BOM_TEXTS = ["starts the file after its byte-order mark", f"keeps a {BOM} inside", f"{BOM}starts with one"]


def bom_lines(offset):
    return [json.dumps({"text": t, "id": offset + i}, ensure_ascii=False).encode() for i, t in enumerate(BOM_TEXTS)]


def hostile_paths(root):
    """Writes, beside ``hostile_corpus``'s files, paths a pattern matches that are no file to read, files
    reached through links, and text files that start with a UTF-8 byte-order mark (one per text reader).
    Returns the files read with their records, and the refused paths with their reasons."""
    data = root / "data"
    (data / "bom.jsonl").write_bytes(BOM.encode() + jsonl(bom_lines(0)))
    (data / "bom.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(BOM.encode() + jsonl(bom_lines(10))))
    (data / "bom.json.gz").write_bytes(gzip.compress(BOM.encode() + jsonl(bom_lines(20)), mtime=0))
    pq.write_table(pa.table({"text": BOM_TEXTS}), data / "bom-text.parquet")  # parquet: a BOM is text
    os.makedirs(root.parent / "blobs", exist_ok=True)
    (root.parent / "blobs" / "c0ffee").write_bytes(gzip.compress(jsonl(good_lines(500)), mtime=0))
    os.symlink("../../blobs/c0ffee", data / "linked.json.gz")  # as a hub cache links snapshots to blobs
    os.symlink("missing.jsonl", data / "dangling.jsonl")
    os.symlink("loop.jsonl", data / "loop.jsonl")
    os.makedirs(data / "part-0.parquet")  # Spark writes its output as folders
    pq.write_table(pa.table({"text": GOOD[:3]}), data / "part-0.parquet" / "part-00000.snappy.parquet")
    os.mkfifo(data / "pipe.jsonl.zst")  # would hang the worker that opened it
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(data / "sock.jsonl"))  # the socket file stays after close
    os.symlink(os.devnull, data / "null.json.gz")
    read = {"data/bom.jsonl": 3, "data/bom.jsonl.zst": 3, "data/bom.json.gz": 3, "data/bom-text.parquet": 3,
            "data/linked.json.gz": 40}
    refused = {"data/dangling.jsonl": "dangling_link", "data/loop.jsonl": "link_loop",
               "data/part-0.parquet": "directory", "data/pipe.jsonl.zst": "special_file",
               "data/sock.jsonl": "special_file", "data/null.json.gz": "special_file"}
    return read, refused


def mixture_file(tmp_path, skip=True, weight_files=1.0, kind="files", paths='["data/*"]'):
    path = tmp_path / "mix.yaml"
    path.write_text(f"""
name: hostile
total_tokens: 2000
seq_len: 64
tokenizer: {TOKENIZER}
shards: 2
sources:
  - name: hostile
    kind: {kind}
    root: corpus
    {f"paths: {paths}" if paths else ""}
    skip_corrupt_files: {str(skip).lower()}
    weight: {weight_files}
    max_repetition: 1.0
""")
    return load_mixture(str(path))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    expected = hostile_corpus(tmp / "corpus")
    expected_paths = hostile_paths(tmp / "corpus")
    manifest = run_mixture(mixture_file(tmp), str(tmp), str(tmp / "out"), str(tmp / "cache"), IN_PROCESS)
    return tmp, manifest, expected, expected_paths


def test_every_bad_record_is_rejected_and_counted(hostile):
    _, manifest, (rejected, corrupt), _ = hostile
    a = manifest["sources"]["hostile"]["accounting"]
    assert a["rejected_by_reason"] == rejected
    assert {c["file"] for c in a["corrupt_files"]} == corrupt
    assert a["read"] == a["selected_documents"] + a["dropped_by_sampling"] + a["rejected"] + a["excluded_subset"]
    # good: 40 (a.jsonl) + 40 + 40 + 5 (d.parquet) + 1 (EXACT) + what the truncated streams gave before the fault;
    # the parquet null and empty rows are among the missing_text and empty_text rejects
    assert a["forwarded"] >= 126 and a["rejected"] == sum(rejected.values())
    assert a["dropped_by_sampling"] > 0  # 2000 tokens need only some of the documents


def test_rejects_files_hold_every_bad_record_with_its_line(hostile):
    tmp, manifest, *_ = hostile
    cache = TokenCache(os.path.join(tmp, "cache", "hostile", manifest["sources"]["hostile"]["cache_fingerprint"][:16]))
    rejects = []
    for p in cache.parts:
        path = os.path.join(cache.directory, p["part"] + ".rejects.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rejects += [json.loads(line) for line in f]
    by_pos = {(r["file"], r["position"]): r for r in rejects}
    assert by_pos[("data/a.jsonl", "41")]["reason"] == "malformed_json"
    huge = by_pos[("data/a.jsonl", "54")]
    assert huge["reason"] == "malformed_json" and len(huge["raw"]) == len('{"text": "') + (50 << 20)
    assert by_pos[("data/a.jsonl", "47")]["raw_base64"]  # invalid UTF-8 kept byte for byte
    assert by_pos[("data/d.parquet", "#5")]["reason"] == "missing_text"
    corrupt = {r["file"] for r in rejects if r["reason"] == "corrupt_file"}
    assert corrupt == {"data/truncated.jsonl.zst", "data/truncated.json.gz", "data/missing-column.parquet",
                       "data/not-parquet.parquet"}


def test_text_reaches_the_tokenizer_exactly_as_read(hostile):
    tmp, manifest, *_ = hostile
    cache = TokenCache(os.path.join(tmp, "cache", "hostile", manifest["sources"]["hostile"]["cache_fingerprint"][:16]))
    tok = load_tokenizer(TOKENIZER)
    part = next(i for i, p in enumerate(cache.parts) if p["file"] == "data/a.jsonl")
    ids = cache.doc_table(part).column("doc_id").to_pylist()
    row = ids.index("data/a.jsonl:55")
    assert tok.tokenizer.decode(cache.tokens(part)[row][:-1].tolist(), skip_special_tokens=False) == EXACT


def test_without_skip_a_broken_file_stops_the_run_naming_it(tmp_path):
    hostile_corpus(tmp_path / "corpus")
    with pytest.raises(Exception) as e:
        run_mixture(mixture_file(tmp_path, skip=False), str(tmp_path), str(tmp_path / "out"),
                    str(tmp_path / "cache"), IN_PROCESS)
    assert any(name in str(e.value) for name in ("truncated.jsonl.zst", "truncated.json.gz", "missing-column.parquet",
                                                  "not-parquet.parquet"))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_file_that_vanishes_after_listing(tmp_path, monkeypatch):
    import pipeline.run as run

    hostile_corpus(tmp_path / "corpus")
    real = run.list_source_files

    def list_then_vanish(spec, data_root):
        files = real(spec, data_root)
        os.remove(tmp_path / "corpus" / "data" / "c.json.gz")
        return files

    monkeypatch.setattr(run, "list_source_files", list_then_vanish)
    manifest = run_mixture(mixture_file(tmp_path), str(tmp_path), str(tmp_path / "out"), str(tmp_path / "cache"),
                           IN_PROCESS)
    corrupt = {c["file"]: c["error"] for c in manifest["sources"]["hostile"]["accounting"]["corrupt_files"]}
    assert "cannot be opened" in corrupt["data/c.json.gz"]


def test_a_source_whose_every_record_is_rejected_is_an_error(tmp_path):
    os.makedirs(tmp_path / "corpus" / "data")
    (tmp_path / "corpus" / "data" / "x.jsonl").write_bytes(jsonl([b'{"text": ""}', b"not json"]))
    with pytest.raises(PlanError, match="'hostile' has no tokens"):
        run_mixture(mixture_file(tmp_path), str(tmp_path), str(tmp_path / "out"), str(tmp_path / "cache"), IN_PROCESS)


def test_the_exit_status_tells_the_truth(tmp_path):
    """`mixprep run` with a source whose every record is rejected exits 2, writes no manifest."""
    os.makedirs(tmp_path / "corpus" / "data")
    (tmp_path / "corpus" / "data" / "x.jsonl").write_bytes(jsonl([b'{"text": "  "}', b"{oops"]))
    mix = mixture_file(tmp_path).origin
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--mixture", mix, "--data-root", str(tmp_path),
         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--direct_running_mode=in_memory"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'hostile' has no tokens" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def cache_of(tmp, manifest):
    return TokenCache(os.path.join(tmp, "cache", "hostile", manifest["sources"]["hostile"]["cache_fingerprint"][:16]))


def test_every_file_matched_is_read_or_refused_with_its_reason(hostile):
    tmp, manifest, (_, corrupt), (read, refused) = hostile
    a = manifest["sources"]["hostile"]["accounting"]
    assert {r["file"]: r["reason"] for r in a["files_refused"]} == refused
    assert all(r["error"].startswith("is ") for r in a["files_refused"])
    files = {f["file"]: f for f in a["files"]}
    read = {**read, "data/a.jsonl": 55, "data/b.jsonl.zst": 40, "data/c.json.gz": 40, "data/d.parquet": 8,
            "data/empty.jsonl": 0, "data/empty.jsonl.zst": 0, "data/empty.json.gz": 0,
            "data/missing-column.parquet": 0, "data/not-parquet.parquet": 0}
    assert files.keys() == read.keys() | corrupt and {f: files[f]["read"] for f in read} == read
    assert a["files_matched"] == a["files_read"] + len(a["files_refused"]) == len(files) + len(refused) == 22
    assert a["files_read"] == len(files) == len(cache_of(tmp, manifest).parts)
    assert sum(f["read"] for f in files.values()) == a["read"]
    assert a["read"] == a["forwarded"] + a["rejected"] + a["excluded_subset"]
    assert all(f["size"] == os.stat(tmp / "corpus" / name).st_size for name, f in files.items())
    assert cache_of(tmp, manifest).manifest["accounting"] == {
        k: v for k, v in a.items() if k not in ("selected_documents", "dropped_by_sampling")}


def test_a_leading_byte_order_mark_is_skipped_and_counted_on_every_text_reader(hostile):
    tmp, manifest, *_ = hostile
    assert manifest["sources"]["hostile"]["accounting"]["bom_skipped"] == 3  # parquet has none to skip
    cache, tok = cache_of(tmp, manifest), load_tokenizer(TOKENIZER)
    for name in ("data/bom.jsonl", "data/bom.jsonl.zst", "data/bom.json.gz", "data/bom-text.parquet"):
        part = next(i for i, p in enumerate(cache.parts) if p["file"] == name)
        tokens = cache.tokens(part)
        texts = [tok.tokenizer.decode(tokens[row][:-1].tolist(), skip_special_tokens=False)
                 for row in range(len(tokens))]
        assert texts == BOM_TEXTS, name  # the first record whole; a BOM inside a text kept as text
        ids = cache.doc_table(part).column("doc_id").to_pylist()
        positions = ["#0", "#1", "#2"] if name.endswith(".parquet") else [":1", ":2", ":3"]
        assert ids == [name + p for p in positions]


def test_linked_folders_and_files_are_read_under_their_names_in_the_source(tmp_path):
    """A RedPajama copy whose subset folders and files are links elsewhere, as a hub cache or a shared
    download makes them: every file read, ids and subsets as seen under the source root."""
    corpus = tmp_path / "corpus"
    for folder in ("elsewhere/arxiv", "dumps/2019", "blobs", "corpus/book", "corpus/common_crawl"):
        os.makedirs(tmp_path / folder)
    (tmp_path / "elsewhere" / "arxiv" / "a.jsonl").write_bytes(jsonl(good_lines(0)))
    (tmp_path / "blobs" / "b0").write_bytes(jsonl(good_lines(100)))
    zst = zstandard.ZstdCompressor().compress(jsonl(good_lines(200)))
    (tmp_path / "dumps" / "2019" / "x.jsonl.zst").write_bytes(zst)
    os.symlink(tmp_path / "elsewhere" / "arxiv", corpus / "arxiv")
    os.symlink("../../blobs/b0", corpus / "book" / "b.jsonl")
    os.symlink("../../dumps/2019", corpus / "common_crawl" / "2019")
    manifest = run_mixture(mixture_file(tmp_path, skip=False, kind="redpajama", paths=None), str(tmp_path),
                           str(tmp_path / "out"), str(tmp_path / "cache"), IN_PROCESS)
    a = manifest["sources"]["hostile"]["accounting"]
    assert a["files"] == [{"file": "arxiv/a.jsonl", "size": len(jsonl(good_lines(0))), "read": 40},
                          {"file": "book/b.jsonl", "size": len(jsonl(good_lines(100))), "read": 40},
                          {"file": "common_crawl/2019/x.jsonl.zst",
                           "size": os.stat(corpus / "common_crawl" / "2019" / "x.jsonl.zst").st_size, "read": 40}]
    assert a["files_matched"] == a["files_read"] == 3 and a["files_refused"] == []
    assert a["read"] == a["forwarded"] == 120
    cache = cache_of(tmp_path, manifest)
    assert cache.doc_table(0).column("doc_id").to_pylist()[0] == "arxiv/a.jsonl:1"
    assert set(cache.stats["subsets"]) == {"arxiv", "book", "common_crawl"}


def no_file(kind, data):
    """Puts one path that is no file to read, of ``kind``, in ``data``; returns its name."""
    if kind == "dangling_link":
        os.symlink("gone.jsonl", data / "x.jsonl")
    elif kind == "link_loop":
        os.symlink("x.jsonl", data / "x.jsonl")
    elif kind == "directory":
        os.makedirs(data / "x.jsonl")
    else:
        os.mkfifo(data / "x.jsonl")
    return "x.jsonl"


@pytest.mark.parametrize("kind", ["dangling_link", "link_loop", "directory", "special_file"])
def test_without_skip_a_path_that_is_no_file_stops_the_run_naming_it(tmp_path, kind):
    hostile_corpus(tmp_path / "corpus")
    name = no_file(kind, tmp_path / "corpus" / "data")
    with pytest.raises(SourceError) as e:
        run_mixture(mixture_file(tmp_path, skip=False), str(tmp_path), str(tmp_path / "out"),
                    str(tmp_path / "cache"), IN_PROCESS)
    assert "sources[0] (hostile)" in str(e.value) and str(tmp_path / "corpus" / "data" / name) in str(e.value)
    assert "skip_corrupt_files: true" in str(e.value)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out" / "manifest.json").exists()


def test_a_named_pipe_ends_the_command_with_status_2_not_a_hang(tmp_path):
    os.makedirs(tmp_path / "corpus" / "data")
    (tmp_path / "corpus" / "data" / "x.jsonl").write_bytes(jsonl(good_lines()))
    os.mkfifo(tmp_path / "corpus" / "data" / "y.jsonl")
    mix = mixture_file(tmp_path, skip=False).origin
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--mixture", mix, "--data-root", str(tmp_path),
         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--direct_running_mode=in_memory"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{tmp_path / 'corpus' / 'data' / 'y.jsonl'} is a named pipe" in proc.stderr
    assert "Traceback" not in proc.stderr
