"""Listing a source's files: every path its patterns match is read or refused with a reason, on a local
folder (real links, loops, pipes, sockets, devices) and on an S3 store (real moto server)."""

import os
import socket
import threading

import pytest

from pipeline.errors import CorruptFileError, SourceError
from pipeline.sources import REFUSALS, SourceSpec, list_source_files, open_source_file, read_documents

SUFFIXES = (".jsonl", ".json.gz", ".jsonl.zst", ".parquet")  # one per reader


def spec(paths, skip=True, **kw):
    return SourceSpec("src", kw.pop("kind", "files"), root="corpus", paths=tuple(paths), skip_corrupt_files=skip, **kw)


def listing(tmp_path, paths, skip=True, **kw):
    return list_source_files(spec(paths, skip, **kw), str(tmp_path))


def rels(files):
    return [f.rel for f in files]


def refusals(files):
    return {r.rel: r.reason for r in files.refused}


def touch(path, data=b'{"text": "x"}\n'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_linked_folders_and_files_are_followed_under_the_names_seen_from_the_root(tmp_path):
    """A subset folder linked from elsewhere, a file linked to a blob (a hub cache): read, ids from the link's name."""
    touch(tmp_path / "elsewhere" / "arxiv" / "a.jsonl")
    touch(tmp_path / "blobs" / "0123abcd")
    touch(tmp_path / "corpus" / "book" / "b.jsonl")
    os.symlink(tmp_path / "elsewhere" / "arxiv", tmp_path / "corpus" / "arxiv")
    os.symlink("../../blobs/0123abcd", tmp_path / "corpus" / "book" / "c.jsonl")
    files = listing(tmp_path, ["*/*.jsonl"], skip=False, kind="redpajama")
    assert rels(files) == ["arxiv/a.jsonl", "book/b.jsonl", "book/c.jsonl"] and files.refused == ()
    assert files[0].path == str(tmp_path / "corpus" / "arxiv" / "a.jsonl") and files[0].folder == "arxiv"
    assert files[2].size == len(b'{"text": "x"}\n')  # the target's size, not the link's
    docs = list(read_documents(spec(["*/*.jsonl"], kind="redpajama"), files[0]))
    assert [d.doc_id for d in docs] == ["arxiv/a.jsonl:1"]


def test_include_exclude_sees_linked_subset_folders(tmp_path):
    touch(tmp_path / "elsewhere" / "a.jsonl")
    touch(tmp_path / "corpus" / "book" / "b.jsonl")
    os.symlink(tmp_path / "elsewhere", tmp_path / "corpus" / "arxiv")
    assert rels(listing(tmp_path, ["*/*.jsonl"], kind="redpajama", include=("ArXiv",))) == ["arxiv/a.jsonl"]
    assert rels(listing(tmp_path, ["*/*.jsonl"], kind="redpajama", exclude=("arxiv",))) == ["book/b.jsonl"]


def test_double_star_crosses_linked_folders_and_reports_a_loop_once(tmp_path):
    touch(tmp_path / "corpus" / "cc" / "2019" / "a.jsonl.zst")
    touch(tmp_path / "outside" / "2020" / "b.jsonl.zst")
    os.symlink(tmp_path / "outside" / "2020", tmp_path / "corpus" / "cc" / "2020")
    os.symlink("..", tmp_path / "corpus" / "cc" / "2019" / "up")  # back to cc: a loop
    files = listing(tmp_path, ["*/**/*.jsonl.zst"])
    assert rels(files) == ["cc/2019/a.jsonl.zst", "cc/2020/b.jsonl.zst"]
    assert refusals(files) == {"cc/2019/up": "link_loop"}
    with pytest.raises(SourceError, match=r"cc/2019/up is a link to .*/corpus/cc, a folder above it"):
        listing(tmp_path, ["*/**/*.jsonl.zst"], skip=False)


def test_a_loop_in_an_excluded_subset_folder_is_left_with_it(tmp_path):
    touch(tmp_path / "corpus" / "book" / "b.jsonl")
    os.symlink(".", tmp_path / "corpus" / "arxiv")  # a subset folder that is a loop to the root
    assert refusals(listing(tmp_path, ["*/**.jsonl"], kind="redpajama")) == {"arxiv": "link_loop"}
    files = listing(tmp_path, ["*/**.jsonl"], skip=False, kind="redpajama", exclude=("arxiv",))
    assert rels(files) == ["book/b.jsonl"] and files.refused == ()


def test_a_loop_the_pattern_cannot_reach_is_not_walked(tmp_path):
    touch(tmp_path / "corpus" / "data" / "a.jsonl")
    os.symlink("..", tmp_path / "corpus" / "other")
    os.symlink(".", tmp_path / "corpus" / "data" / "self")
    files = listing(tmp_path, ["data/*.jsonl"], skip=False)  # one level: neither link is a way to a match
    assert rels(files) == ["data/a.jsonl"] and files.refused == ()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_kind_of_unreadable_path_is_refused_by_name(tmp_path, suffix):
    data = tmp_path / "corpus" / "data"
    touch(data / f"good{suffix}")
    os.symlink("missing" + suffix, data / f"dangling{suffix}")
    os.symlink(f"self{suffix}", data / f"self{suffix}")  # a link to itself
    os.makedirs(data / f"part-0{suffix}")  # a Spark output folder
    touch(data / f"part-0{suffix}" / "part-00000-c000")
    os.mkfifo(data / f"pipe{suffix}")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(data / f"sock{suffix}"))
    os.symlink(os.devnull, data / f"null{suffix}")  # a character device
    try:
        files = listing(tmp_path, [f"data/*{suffix}"])
    finally:
        server.close()
    assert rels(files) == [f"data/good{suffix}"]
    assert refusals(files) == {f"data/dangling{suffix}": "dangling_link", f"data/self{suffix}": "link_loop",
                               f"data/part-0{suffix}": "directory", f"data/pipe{suffix}": "special_file",
                               f"data/sock{suffix}": "special_file", f"data/null{suffix}": "special_file"}
    assert set(refusals(files).values()) <= set(REFUSALS)
    details = {r.rel: r.detail for r in files.refused}
    assert details[f"data/dangling{suffix}"] == f"is a symbolic link to missing{suffix}, which does not exist"
    assert details[f"data/pipe{suffix}"].startswith("is a named pipe")
    assert details[f"data/sock{suffix}"].startswith("is a socket")
    assert details[f"data/null{suffix}"].startswith("is a device")


def test_without_skip_a_refused_path_stops_the_listing_naming_it(tmp_path):
    touch(tmp_path / "corpus" / "data" / "good.jsonl")
    os.mkfifo(tmp_path / "corpus" / "data" / "pipe.jsonl")
    with pytest.raises(SourceError) as e:
        listing(tmp_path, ["data/*.jsonl"], skip=False)
    message = str(e.value)
    assert str(tmp_path / "corpus" / "data" / "pipe.jsonl") + " is a named pipe" in message
    assert "skip_corrupt_files: true" in message


def test_a_source_whose_every_match_is_refused_is_an_error(tmp_path):
    os.makedirs(tmp_path / "corpus" / "data")
    os.symlink("nowhere", tmp_path / "corpus" / "data" / "a.jsonl")
    with pytest.raises(SourceError, match="every path its patterns match .* is refused .dangling_link."):
        listing(tmp_path, ["data/*.jsonl"])


def test_a_folder_is_refused_only_when_nothing_beneath_it_is_matched(tmp_path):
    touch(tmp_path / "corpus" / "data" / "sub" / "a.jsonl")
    os.makedirs(tmp_path / "corpus" / "data" / "empty")
    files = listing(tmp_path, ["data/**"])
    assert rels(files) == ["data/sub/a.jsonl"] and refusals(files) == {"data/empty": "directory"}
    # a second pattern that reads a Spark folder's files clears the folder the first one matched
    touch(tmp_path / "corpus" / "spark" / "x.parquet" / "part-0.parquet")
    files = listing(tmp_path, ["spark/*.parquet", "spark/*.parquet/*.parquet"])
    assert rels(files) == ["spark/x.parquet/part-0.parquet"] and files.refused == ()


def test_patterns_keep_beams_syntax(tmp_path):
    for rel in ("a.jsonl", ".hidden.jsonl", "x/b.jsonl", "x/y/c.jsonl", "x/y/z/d.jsonl", "x/e.txt"):
        touch(tmp_path / "corpus" / rel)
    assert rels(listing(tmp_path, ["*.jsonl"])) == [".hidden.jsonl", "a.jsonl"]
    assert rels(listing(tmp_path, ["x/*.jsonl"])) == ["x/b.jsonl"]
    assert rels(listing(tmp_path, ["x/**/*.jsonl"])) == ["x/y/c.jsonl", "x/y/z/d.jsonl"]  # `**` then "/"
    assert rels(listing(tmp_path, ["x/**.jsonl"])) == ["x/b.jsonl", "x/y/c.jsonl", "x/y/z/d.jsonl"]
    assert rels(listing(tmp_path, ["x/y/c.jsonl"])) == ["x/y/c.jsonl"]  # a literal path
    assert rels(listing(tmp_path, ["x/[be].*"])) == ["x/b.jsonl", "x/e.txt"]


def test_opening_a_pipe_in_a_listed_files_place_fails_at_once(tmp_path):
    """A FIFO swapped in after listing: the reader's open must not wait for a writer that never comes."""
    touch(tmp_path / "corpus" / "data" / "a.jsonl")
    (sf,) = listing(tmp_path, ["data/*.jsonl"], skip=False)
    os.remove(sf.path)
    os.mkfifo(sf.path)
    result = {}

    def read():
        try:
            list(read_documents(spec(["data/*.jsonl"], skip=False), sf))
        except CorruptFileError as e:
            result["error"] = str(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "opening a named pipe hangs"
    assert "cannot be opened" in result["error"] and "a named pipe, not a regular file" in result["error"]
    with pytest.raises(OSError, match="a directory, not a regular file"):
        open_source_file(str(tmp_path / "corpus" / "data"))


def test_object_store_folder_markers_and_prefixes_are_directories(s3_server, tmp_path):
    """S3 has no links: a folder marker key ("sub/", size 0) is not data, and a Spark-style prefix that a
    pattern matches is refused like a local folder, with the same accounting as locally."""
    import boto3

    touch(tmp_path / "corpus" / "data" / "a.jsonl")
    touch(tmp_path / "corpus" / "data" / "x.parquet" / "part-0.parquet", b"PAR1")
    root = s3_server(str(tmp_path / "corpus"), "markers", "hub/corpus")
    boto3.client("s3", endpoint_url=s3_server.endpoint).put_object(Bucket="markers", Key="hub/corpus/data/new/",
                                                                  Body=b"")
    os.makedirs(tmp_path / "corpus" / "data" / "new")  # what the marker stands for, locally
    for data_root in ("s3://markers/hub", str(tmp_path)):
        files = list_source_files(spec(["data/*"]), data_root)
        assert rels(files) == ["data/a.jsonl"], data_root
        assert refusals(files) == {"data/new": "directory", "data/x.parquet": "directory"}, data_root
        deep = list_source_files(spec(["data/**"]), data_root)
        assert rels(deep) == ["data/a.jsonl", "data/x.parquet/part-0.parquet"]
    assert list_source_files(spec(["data/*"]), "s3://markers/hub")[0].path == f"{root}/data/a.jsonl"
    with pytest.raises(SourceError, match=r"s3://markers/hub/corpus/data/new/ is a directory"):
        list_source_files(spec(["data/*"], skip=False), "s3://markers/hub")
