"""Requests and time of the pack stage: a mixture run twice, the second time with its caches built,
counting every S3 request the second run makes (caches and output on a moto server on loopback) or,
locally, the pack stage's reads of token files.

    python scripts/pack_reads.py --store s3                          # stage-1 dry run, 200k tokens
    python scripts/pack_reads.py --store local --data-root /tmp/corpus --mixture /tmp/corpus/one.yaml

Prints one JSON line: copies written, GETs and the body bytes read by kind of object (cache token
files .bin, indexes .idx, "other": the routed files under _refs), all requests, requests and bytes
read per copy, and the pack stage's wall time (the shard writers' time, in-process).
Run it from a checkout (it imports that checkout's pipeline): the same script in an older worktree
measures the code before a change.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


class RequestLog:
    """Every HTTP request botocore sends in this process, by (method, kind of object), and the body
    bytes read from each kind's GETs."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.bytes_read: collections.Counter = collections.Counter()

    def install(self) -> None:
        import botocore.endpoint

        send, log = botocore.endpoint.Endpoint._send, self

        def counted(endpoint, request):
            kind = _kind(request.url.split("?")[0])
            log.counts[(request.method, kind)] += 1
            response = send(endpoint, request)
            if request.method == "GET":
                log.count_body(response.raw, kind)
            return response

        botocore.endpoint.Endpoint._send = counted

    def count_body(self, raw, kind: str) -> None:
        """Count the body bytes the client consumes: Beam's S3 reader asks for open-ended ranges
        (``bytes=N-``) and stops reading where it needs no more, so Content-Length overstates."""
        read, log = raw.read, self

        def counted_read(*args, **kwargs):
            data = read(*args, **kwargs)
            log.bytes_read[kind] += len(data or b"")
            return data

        raw.read = counted_read


def _kind(path: str) -> str:
    for suffix in (".bin", ".idx", ".parquet", ".json", ".npy"):
        if path.endswith(suffix):
            return suffix
    return "other"


class ShardTimer:
    """Wall time spent in the shard writers (the pack stage's reads and writes), in-process runners."""

    def __init__(self):
        self.seconds = 0.0

    def install(self) -> None:
        from pipeline import pack

        process, timer = pack._WriteShardFn.process, self

        def timed(fn, element, packing):
            t = time.perf_counter()
            yield from process(fn, element, packing)
            timer.seconds += time.perf_counter() - t

        pack._WriteShardFn.process = timed


class LocalReads:
    """Reads of token files: ``MMIDXReader`` item reads (a copy each), spans and gathers (``take``)."""

    def __init__(self):
        self.items = self.spans = 0

    def install(self) -> None:
        from pipeline import mmidx

        getitem, log = mmidx.MMIDXReader.__getitem__, self
        span, take = getattr(mmidx.MMIDXReader, "span", None), getattr(mmidx.MMIDXReader, "take", None)

        def counted_item(reader, i):
            log.items += 1
            return getitem(reader, i)

        mmidx.MMIDXReader.__getitem__ = counted_item
        if span is not None:
            def counted_span(reader, first, last):
                log.spans += 1
                return span(reader, first, last)

            mmidx.MMIDXReader.span = counted_span
        if take is not None:
            def counted_take(reader, rows):
                log.spans += 1
                return take(reader, rows)

            mmidx.MMIDXReader.take = counted_take


def moto(data_root: str) -> tuple[object, list[str], str]:
    """A moto S3 server on loopback holding ``data_root`` (bucket data) and an empty bucket out."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    client = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("data", "out"):
        client.create_bucket(Bucket=bucket)
    for dirpath, _, files in os.walk(data_root, followlinks=True):
        for f in files:
            path = os.path.join(dirpath, f)
            client.upload_file(path, "data", "root/" + os.path.relpath(path, data_root))
    options = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test", "--s3_secret_access_key=test",
               "--s3_region_name=us-east-1"]
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(options))
    return server, options, "s3://data/root"


def measure(args) -> dict:
    from pipeline import storage
    from pipeline.config import load_mixture
    from pipeline.mixture import run_mixture

    overrides = {"tokenizer": os.path.abspath(args.tokenizer)}
    if args.total_tokens:
        overrides["total_tokens"] = args.total_tokens
    if args.shards:
        overrides["shards"] = args.shards
    cfg = load_mixture(args.mixture, overrides)
    work = Path(tempfile.mkdtemp(prefix="pack-reads-"))
    server, options, data = None, list(IN_PROCESS), args.data_root
    if args.store == "s3":
        server, extra, data = moto(args.data_root)
        options += extra
        out, cache = "s3://out/mix", "s3://out/cache"
    else:
        out, cache = str(work / "mix"), str(work / "cache")
    try:
        run_mixture(cfg, data, out, cache, options)  # builds the caches
        storage.delete_tree(out)
        requests, timer, reads = RequestLog(), ShardTimer(), LocalReads()
        for probe in (requests, timer, reads):
            probe.install()
        t = time.perf_counter()
        records = run_mixture(cfg, data, out, cache, options)
        seconds = time.perf_counter() - t
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    copies = sum(src.get("copies", 0) for src in records["sources"].values())
    gets = {k: v for (m, k), v in requests.counts.items() if m == "GET"}
    row = {"store": args.store, "mixture": os.path.basename(args.mixture), "shards": cfg.num_shards,
           "copies": copies, "pack_seconds": round(timer.seconds, 3), "run_seconds": round(seconds, 3),
           "requests": sum(requests.counts.values()), "gets": gets, "get_bytes": dict(requests.bytes_read),
           "local_item_reads": reads.items, "local_span_reads": reads.spans}
    if copies:
        row["bin_gets_per_copy"] = round(gets.get(".bin", 0) / copies, 4)
        row["get_bytes_per_copy"] = round(sum(requests.bytes_read.values()) / copies, 1)
        row["reads_per_copy"] = round((reads.items + reads.spans) / copies, 4)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=("local", "s3"), default="local")
    ap.add_argument("--mixture", default=str(REPO / "mixtures" / "stage1.yaml"))
    ap.add_argument("--data-root", default=str(REPO / "samples"))
    ap.add_argument("--tokenizer", default=str(REPO / "tokenizer" / "tokenizer.json"),
                    help="the project's small BPE by default (the dry runs' tokenizer)")
    ap.add_argument("--total-tokens", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=2)
    print(json.dumps(measure(ap.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
