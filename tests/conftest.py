"""Shared fixtures: paths to the bundled samples, a real S3-compatible server on loopback."""

import os
import shutil

# Fuzz tests run a bounded number of examples in `make test`; `make fuzz` runs a long campaign.
FUZZ_EXAMPLES = int(os.environ.get("MIXPREP_FUZZ_EXAMPLES", "0"))


def fuzz_examples(default: int) -> int:
    return FUZZ_EXAMPLES or default

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
BAD = os.path.join(ROOT, "tests", "data", "bad")
TOKENIZER = os.path.join(ROOT, "tokenizer", "tokenizer.json")
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")
STAGE2 = os.path.join(ROOT, "mixtures", "stage2.yaml")
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def mixture(path, **overrides):
    """A bundled mixture in 3 shards with the bundled test tokenizer (the mixtures name GPT-NeoX-20B's), with
    ``overrides``."""
    from pipeline.config import load_mixture

    return load_mixture(path, {"shards": 3, "tokenizer": TOKENIZER, **overrides})


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Stage 1 then stage 2 dry runs sharing one cache (what `make dry-run` does), built once per session."""
    from pipeline.mixture import run_mixture

    root = tmp_path_factory.mktemp("mix")
    cache = str(root / "cache")
    s1 = run_mixture(mixture(STAGE1, total_tokens=1_000_000), SAMPLES, str(root / "stage1"), cache, IN_PROCESS)
    built_before_stage2 = set(os.listdir(cache))
    s2 = run_mixture(mixture(STAGE2, total_tokens=2_000_000), SAMPLES, str(root / "stage2"), cache, IN_PROCESS)
    return {"root": root, "cache": cache, "stage1": s1, "stage2": s2, "built_before_stage2": built_before_stage2}


HELD_OUT = {"validation_tokens": 50_000, "test_tokens": 30_000}


@pytest.fixture(scope="session")
def held_out_run(runs):
    """The stage 1 dry run with held-out validation and test splits (HELD_OUT), on the dry runs' caches."""
    from pipeline.mixture import run_mixture

    out = runs["root"] / "held-out"
    m = run_mixture(mixture(STAGE1, total_tokens=1_000_000, **HELD_OUT), SAMPLES, str(out), runs["cache"], IN_PROCESS)
    return {"root": out, "manifest": m, "cache": runs["cache"]}


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (started here, stopped at the end), wired into Beam's FileSystems.

    Yields a function ``upload(local_dir, bucket, prefix) -> "s3://bucket/prefix"``.
    """
    import boto3
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # AWS_ENDPOINT_URL too: any S3 client made without Beam's options still talks only to this server.
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    options = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test", "--s3_secret_access_key=test",
               "--s3_region_name=us-east-1"]
    FileSystems.set_options(PipelineOptions(options))
    client = boto3.client("s3", endpoint_url=endpoint)

    def upload(local_dir: str, bucket: str, prefix: str) -> str:
        existing = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
        for dirpath, _, files in os.walk(local_dir):
            for f in files:
                path = os.path.join(dirpath, f)
                key = f"{prefix}/{os.path.relpath(path, local_dir)}"
                client.upload_file(path, bucket, key)
        return f"s3://{bucket}/{prefix}"

    def bucket(name: str) -> str:
        if name not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=name)
        return f"s3://{name}"

    upload.bucket = bucket
    upload.options = options
    upload.endpoint = endpoint
    yield upload
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bad_root(tmp_path):
    """A private copy of the bad-input set, so tests can add or damage files freely."""
    dst = tmp_path / "bad"
    shutil.copytree(BAD, dst)
    return str(dst)
