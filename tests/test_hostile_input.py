"""Hostile input for every format: each bad record rejected and counted, each broken file named,
and the manifest's accounting (read = selected + dropped by sampling + rejected + excluded) exact."""

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import TOKENIZER
from pipeline.cache import TokenCache
from pipeline.config import load_mixture
from pipeline.mixture import run_mixture
from pipeline.plan import PlanError
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


def mixture_file(tmp_path, skip=True, weight_files=1.0):
    path = tmp_path / "mix.yaml"
    path.write_text(f"""
name: hostile
total_tokens: 2000
seq_len: 64
tokenizer: {TOKENIZER}
shards: 2
sources:
  - name: hostile
    kind: files
    root: corpus
    paths: ["data/*"]
    skip_corrupt_files: {str(skip).lower()}
    weight: {weight_files}
    max_repetition: 1.0
""")
    return load_mixture(str(path))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    expected = hostile_corpus(tmp / "corpus")
    manifest = run_mixture(mixture_file(tmp), str(tmp), str(tmp / "out"), str(tmp / "cache"), IN_PROCESS)
    return tmp, manifest, expected


def test_every_bad_record_is_rejected_and_counted(hostile):
    _, manifest, (rejected, corrupt) = hostile
    a = manifest["sources"]["hostile"]["accounting"]
    assert a["rejected_by_reason"] == rejected
    assert {c["file"] for c in a["corrupt_files"]} == corrupt
    assert a["read"] == a["selected_documents"] + a["dropped_by_sampling"] + a["rejected"] + a["excluded_subset"]
    # good: 40 (a.jsonl) + 40 + 40 + 5 (d.parquet) + 1 (EXACT) + what the truncated streams gave before the fault;
    # the parquet null and empty rows are among the missing_text and empty_text rejects
    assert a["forwarded"] >= 126 and a["rejected"] == sum(rejected.values())
    assert a["dropped_by_sampling"] > 0  # 2000 tokens need only some of the documents


def test_rejects_files_hold_every_bad_record_with_its_line(hostile):
    tmp, manifest, _ = hostile
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
    tmp, manifest, _ = hostile
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
    import pipeline.mixture as mixture

    hostile_corpus(tmp_path / "corpus")
    real = mixture.list_source_files

    def list_then_vanish(spec, data_root):
        files = real(spec, data_root)
        os.remove(tmp_path / "corpus" / "data" / "c.json.gz")
        return files

    monkeypatch.setattr(mixture, "list_source_files", list_then_vanish)
    manifest = run_mixture(mixture_file(tmp_path), str(tmp_path), str(tmp_path / "out"), str(tmp_path / "cache"), IN_PROCESS)
    corrupt = {c["file"]: c["error"] for c in manifest["sources"]["hostile"]["accounting"]["corrupt_files"]}
    assert "cannot be opened" in corrupt["data/c.json.gz"]


def test_a_source_whose_every_record_is_rejected_is_an_error(tmp_path):
    os.makedirs(tmp_path / "corpus" / "data")
    (tmp_path / "corpus" / "data" / "x.jsonl").write_bytes(jsonl([b'{"text": ""}', b"not json"]))
    with pytest.raises(PlanError, match="'hostile' has no tokens"):
        run_mixture(mixture_file(tmp_path), str(tmp_path), str(tmp_path / "out"), str(tmp_path / "cache"), IN_PROCESS)


def test_the_exit_status_tells_the_truth(tmp_path):
    """`mixprep run` with a source whose every record is rejected exits 2, writes no manifest."""
    import subprocess
    import sys

    from conftest import ROOT

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
