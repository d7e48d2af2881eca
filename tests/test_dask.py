"""mixprep on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1.

Both dry-run stages through Beam's DaskRunner write the local runner's bytes (shards, manifest, every
cache file), spread tokenizing and packing over both workers, and survive a worker SIGKILLed while
tokenizing: the workers run without a nanny, so the scheduler moves the dead worker's tasks (and
recomputes the results it held) to the other one.
"""

import collections
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, SAMPLES, TOKENIZER

from pipeline.cache.tokenizing import tokenize_mixture
from pipeline.config import load_mixture
from pipeline.mixture import run_mixture
from pipeline.runners import beam_defaults
from pipeline.sources import list_source_files

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed")

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
STAGES = {"stage1": ("stage1.yaml", 1_000_000), "stage2": ("stage2.yaml", 2_000_000)}  # what `make dry-run` mixes


def mixture(stage: str):
    name, tokens = STAGES[stage]
    overrides = {"tokenizer": TOKENIZER, "total_tokens": tokens, "shards": 4}
    return load_mixture(os.path.join(ROOT, "mixtures", name), overrides)


def _start(args: list[str], log: str) -> subprocess.Popen:
    # Its own process group, so that the finalizer stops it and anything it started; the repo on the
    # path, so that workers unpickle mixprep's DoFns.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as f:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two one-thread workers (no nanny); stopped at the end, whatever happens."""
    root = tmp_path_factory.mktemp("dask")
    scheduler_file = str(root / "scheduler.json")
    procs = []
    try:
        procs.append(_start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", scheduler_file], str(root / "scheduler.log")))
        deadline = time.monotonic() + 60
        while not os.path.exists(scheduler_file):
            assert time.monotonic() < deadline and procs[0].poll() is None, (root / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(open(scheduler_file).read())["address"]
        workers = [_start([DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                           "--host", "127.0.0.1"], str(root / f"worker{i}.log")) for i in range(2)]
        procs += workers
        with distributed.Client(address) as client:
            client.wait_for_workers(2, timeout=60)
            client.get_task_stream()  # registers the scheduler's task stream: which worker ran what
            yield {"address": address, "client": client, "workers": workers, "root": root}
    finally:
        _stop(procs)


def on_dask(cluster) -> list[str]:
    return beam_defaults(["--runner=DaskRunner", f"--dask_client_address={cluster['address']}"])


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Both stages on the local runner, sharing one cache (as `make dry-run` does)."""
    root = tmp_path_factory.mktemp("local")
    for stage in STAGES:
        run_mixture(mixture(stage), SAMPLES, str(root / stage), str(root / "cache"), IN_PROCESS)
    return root


def digests(root, stages=tuple(STAGES)) -> dict[str, str]:
    """sha256 of every shard .bin/.idx, shard record, provenance file and manifest of ``stages``, and of
    every file of their sources' caches."""
    sources = {s.name for stage in stages for s in mixture(stage).sources if s.weight > 0}
    paths = [p for stage in stages for pattern in ("*.bin", "*.idx", "manifest.json", "_shards/*", "_provenance/*")
             for p in glob.glob(os.path.join(root, stage, pattern))]
    paths += [p for source in sources for p in glob.glob(os.path.join(root, "cache", source, "**"), recursive=True)
              if os.path.isfile(p)]
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _input_files(stage: str) -> list[list]:
    return [list_source_files(s.spec, SAMPLES) for s in mixture(stage).sources if s.weight > 0]


def compute_share(client, start: float) -> dict[str, float]:
    """Per worker, its share of the compute time of the tasks that ran since ``start``."""
    busy = collections.Counter()
    for record in client.get_task_stream(start=start):
        busy[record["worker"]] += sum(s["stop"] - s["start"] for s in record["startstops"] if s["action"] == "compute")
    total = sum(busy.values())
    return {w: t / total for w, t in busy.items()}


def test_both_stages_write_the_local_runners_bytes_over_both_workers(cluster, local, tmp_path):
    client, cache = cluster["client"], str(tmp_path / "cache")
    cfg = mixture("stage1")
    start = time.time()
    tokenize_mixture(cfg, SAMPLES, cache, on_dask(cluster))
    tokenized = compute_share(client, start)
    start = time.time()
    run_mixture(cfg, SAMPLES, str(tmp_path / "stage1"), cache, on_dask(cluster))  # caches found: packs only
    packed = compute_share(client, start)
    run_mixture(mixture("stage2"), SAMPLES, str(tmp_path / "stage2"), cache, on_dask(cluster))

    assert digests(tmp_path) == digests(local)
    # One file, one cache part a task: both workers tokenize and pack (Beam's default put up to 128
    # elements in one partition, so all of it ran as one task on one worker).
    for share in (tokenized, packed):
        assert len(share) == 2 and min(share.values()) > 0.2, share


def test_a_worker_killed_while_tokenizing_changes_nothing(cluster, local, tmp_path):
    """SIGKILL one worker once the first cache part is written: the run ends well, with the same bytes.

    Run as the README says to run on a cluster (`make stage1-mixture RUNNER=DaskRunner
    DASK_SCHEDULER=...`), in this interpreter's environment (`-o`: make does not rebuild it), so the
    run is followed by `mixprep verify`."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    cmd = ["make", "-s", "stage1-mixture", f"VENV={venv}", "-o", os.path.join(venv, ".installed"),
           "RUNNER=DaskRunner", f"DASK_SCHEDULER={cluster['address']}", f"OUT={tmp_path}",
           f"CACHE={tmp_path / 'cache'}", f"DATA_ROOT={SAMPLES}", f"TOKENIZER={TOKENIZER}"]
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(str(tmp_path / "cache" / "*" / "*" / "part-*.json")):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        victim = cluster["workers"][0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        parts = glob.glob(str(tmp_path / "cache" / "*" / "*" / "part-*.json"))
        assert len(parts) < sum(len(c) for c in _input_files("stage1")), "killed after tokenizing"
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    assert "DaskRunner reports no counters: the manifest's accounting comes from the caches" in stderr
    assert len(cluster["client"].scheduler_info()["workers"]) == 1
    assert digests(tmp_path, ["stage1"]) == digests(local, ["stage1"])
    assert not glob.glob(str(tmp_path / "**" / "*.tmp-*"), recursive=True)  # the killed attempt's, removed

