"""Live progress from the files a run writes: rows, ETA, terminal redraw vs log lines, counters."""

import io
import json
import os
import types

from pipeline import layout
from pipeline.progress import Progress, counters_table
from pipeline.sources import SourceFile


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def part(directory, index, size, docs, tokens):
    """What _TokenizeFileFn leaves when an input file is done."""
    with open(layout.part_summary(layout.part_prefix(str(directory), index)), "w") as f:
        json.dump({"index": index, "file_size": size, "stats": {"documents": docs, "tokens": tokens},
                   "shard": {"bin_bytes": 2 * tokens, "dtype": "uint16"}}, f)


def test_tokenize_rows_throughput_eta_and_log_lines(tmp_path):
    d = tmp_path / "cache" / "c4" / "abc"
    d.mkdir(parents=True)
    clock, stream = Clock(), io.StringIO()
    files = [SourceFile(f"/f{i}", f"f{i}", 1000, "") for i in range(4)]
    p = Progress(stream, log_every=10, clock=clock)
    p.tokenizing([("c4", str(d), files)])
    clock.t += 5
    part(d, 0, 1000, 10, 500)
    (d / "part-00001.bin.tmp-123456").write_bytes(b"\0" * 500)  # 250 tokens in flight: half of file 1
    (row,) = p.poll()
    assert (row["done"], row["of"], row["documents"], row["tokens"]) == (1, 4, 10, 750)
    assert row["fraction"] == 0.375 and row["tokens_per_s"] == 150
    assert row["eta"] == (4000 - 1500) / (1500 / 5)
    p.draw()
    assert stream.getvalue() == ""  # a log line every 10 s
    clock.t += 5
    p.draw()
    line = stream.getvalue()
    assert line.startswith("progress: tokenize c4") and "1/4    files" in line and "750 tokens" in line
    assert "ETA 0:17" in line  # 2,500 bytes left at 150 bytes/s and "\x1b" not in line


def test_parts_done_before_the_run_do_not_count_as_throughput(tmp_path):
    part(tmp_path, 0, 1000, 10, 500)
    clock = Clock()
    p = Progress(io.StringIO(), clock=clock)
    p.tokenizing([("c4", str(tmp_path), [SourceFile("/a", "a", 1000, ""), SourceFile("/b", "b", 1000, "")])])
    clock.t += 10
    (row,) = p.poll()
    assert row["fraction"] == 0.5 and row["tokens_per_s"] == 0 and row["eta"] is None
    part(tmp_path, 1, 1000, 10, 400)
    (row,) = p.poll()
    assert row["fraction"] == 1.0 and row["tokens_per_s"] == 40 and row["eta"] == 0


def test_terminal_redraws_in_place(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    stream, clock = Tty(), Clock()
    p = Progress(stream, clock=clock)
    assert p.tty
    p.tokenizing([("a", str(a), [SourceFile("/x", "x", 10, "")]), ("b", str(b), [SourceFile("/y", "y", 10, "")])])
    p.draw()
    first = stream.getvalue()
    assert first.count("\x1b[K\n") == 3 and first.endswith("\x1b[J")  # two sources and a total
    p.draw()
    assert stream.getvalue()[len(first):].startswith("\x1b[3F")  # back up over the block


def test_packing_counts_shards_of_this_plan_only(tmp_path):
    (tmp_path / "_shards").mkdir()
    shard(tmp_path, "m-00000-of-00002", "old", 900)
    clock = Clock()
    p = Progress(io.StringIO(), clock=clock)
    p.packing(str(tmp_path), ["m-00000-of-00002", "m-00001-of-00002"], "new", 1000)
    clock.t += 2
    assert p.poll()[0]["done"] == 0
    shard(tmp_path, "m-00000-of-00002", "new", 400, tail_tokens=10)
    os.remove(tmp_path / "m-00000-of-00002.idx")
    assert p.poll()[0]["done"] == 0  # not done until all its files are there, as the pack stage decides
    (tmp_path / "m-00000-of-00002.idx").write_bytes(b"")
    (tmp_path / "m-00001-of-00002.bin.tmp-abcdef").write_bytes(b"\0" * 200)
    (row,) = p.poll()
    assert (row["label"], row["done"], row["tokens"]) == (tmp_path.name, 1, 510)
    assert row["tokens_per_s"] == 255 and row["eta"] == (1000 - 510) / 255


def test_one_pipeline_run_turns_to_packing_when_its_plan_is_written(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    (out / "_shards").mkdir(parents=True)
    cache.mkdir()
    clock, stream = Clock(), io.StringIO()
    p = Progress(stream, log_every=0, clock=clock)
    p.tokenizing([("c4", str(cache), [SourceFile("/a", "a", 1000, "")])])
    p.packing_when_planned(str(out), ["m-00000-of-00001"], str(out / "_plan.json"))
    clock.t += 1
    part(cache, 0, 1000, 10, 500)
    p.draw()
    assert stream.getvalue().startswith("progress: tokenize c4")  # no plan yet: still tokenizing
    (out / "_plan.json").write_text(json.dumps({"plan_hash": "h", "tokens": 400}))
    clock.t += 1
    p.draw()
    tokenize_final, pack = stream.getvalue().splitlines()[1:]
    assert tokenize_final.startswith("progress: tokenize c4") and "1/1    files" in tokenize_final
    assert pack.startswith("progress: pack     out") and "0/1    shards" in pack
    clock.t += 1
    (out / "m-00000-of-00001.bin.tmp-abcdef").write_bytes(b"\0" * 400)  # 200 of the plan's 400 tokens
    assert p.poll()[0]["fraction"] == 0.5


def test_a_pack_phase_too_quick_to_poll_is_shown_when_the_pipeline_ends(tmp_path):
    (tmp_path / "_shards").mkdir()
    p = Progress(io.StringIO(), clock=Clock())
    p.tokenizing([("c4", str(tmp_path), [SourceFile("/a", "a", 1000, "")])])
    p.packing_when_planned(str(tmp_path), ["m-00000-of-00001"], str(tmp_path / "_plan.json"))
    (tmp_path / "_plan.json").write_text(json.dumps({"plan_hash": "h", "tokens": 400}))
    p.finished(types.SimpleNamespace(metrics=lambda: types.SimpleNamespace(query=lambda: {"counters": []})))
    assert p.poll()[0]["unit"] == "shards"


def test_counters_at_the_end(tmp_path):
    def counter(ns, name, committed):
        return types.SimpleNamespace(key=types.SimpleNamespace(metric=types.SimpleNamespace(namespace=ns, name=name)),
                                     committed=committed, attempted=committed)

    result = types.SimpleNamespace(metrics=lambda: types.SimpleNamespace(
        query=lambda: {"counters": [counter("mix", "samples", 3), counter("cache:c4", "tokens", 1200)]}))
    stream = io.StringIO()
    with Progress(stream, interval=0.01) as p:
        p.finished(result)
        p.finished(result)
    assert stream.getvalue().endswith(counters_table({("mix", "samples"): 6, ("cache:c4", "tokens"): 2400}) + "\n")
    assert "cache:c4   tokens   2,400" in stream.getvalue()


def test_a_runner_without_counters_is_said_once_and_the_run_goes_on(tmp_path):
    from apache_beam.runners.dask.dask_runner import DaskRunnerResult  # Beam's own: its metrics() raises

    stream = io.StringIO()
    with Progress(stream, interval=0.01) as p:
        p.finished(DaskRunnerResult(client=None, futures=[]))
        p.finished(DaskRunnerResult(client=None, futures=[]))
    said = "DaskRunner reports no counters: the manifest's accounting comes from the caches\n"
    assert stream.getvalue().count(said) == 1 and stream.getvalue().endswith(said)


def shard(out, name, plan_hash, tokens, tail_tokens=0):
    """What the pack stage leaves when a shard is done: its .bin/.idx, provenance file, then its record."""
    (out / layout.PROVENANCE_DIR).mkdir(exist_ok=True)
    for path in [*layout.shard_files(str(out), name), layout.provenance_path(str(out), name)]:
        open(path, "wb").close()
    with open(layout.sidecar_path(str(out), name), "w") as f:
        json.dump({"plan_hash": plan_hash, "tokens": tokens, "tail_tokens": tail_tokens,
                   "bin_bytes": 2 * tokens, "provenance": {"file": layout.provenance_rel(name)}}, f)


def test_shards_this_run_wrote_are_never_shown_as_reused(tmp_path):
    """A pack phase that starts and ends between two polls: what decides "reused" is the shard records
    there before the pipeline ran, not those found when the phase is first seen."""
    (tmp_path / "_shards").mkdir()
    shard(tmp_path, "m-00000-of-00002", "h", 300)  # from an earlier run of the same plan
    clock = Clock()
    p = Progress(io.StringIO(), clock=clock)
    p.tokenizing([("c4", str(tmp_path), [SourceFile("/a", "a", 1000, "")])])
    p.packing_when_planned(str(tmp_path), ["m-00000-of-00002", "m-00001-of-00002"], str(tmp_path / "_plan.json"))
    (tmp_path / "_plan.json").write_text(json.dumps({"plan_hash": "h", "tokens": 400}))
    shard(tmp_path, "m-00001-of-00002", "h", 100)  # this run's
    clock.t += 2
    p.finished(types.SimpleNamespace(metrics=lambda: types.SimpleNamespace(query=lambda: {"counters": []})))
    clock.t += 2
    (row,) = p.poll()
    assert (row["done"], row["tokens"]) == (2, 400) and row["tokens_per_s"] == 100 / 2
    assert "reused" not in Progress.render([row], "pack")[0]
