"""Shared fixtures and helpers, for every test folder (tests/ is on sys.path: ``from conftest import``).

Paths to the bundled samples; the dry runs and a small mixture built once per session; a corpus far
larger than its mixture takes (sampling); a real S3-compatible server on loopback; Dataflow options.
Test files import helpers from here, never from one another.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil

import pytest

# Fuzz tests run a bounded number of examples in `make test`; `make fuzz` runs a long campaign.
FUZZ_EXAMPLES = int(os.environ.get("MIXPREP_FUZZ_EXAMPLES", "0"))


def fuzz_examples(default: int) -> int:
    return FUZZ_EXAMPLES or default


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


# --- `mixprep` in this process, and a small mixture built with it once per session ----------------

# Two sources, short samples: a mixture that builds in seconds and still has every feature.
SMALL = f"""
name: small
total_tokens: 100000
seq_len: 511
seed: 7
tokenizer: {TOKENIZER}
shards: 2
length_buckets: [512, 2048]
sources:
  - {{name: c4, kind: c4, root: allenai/c4, category: web, weight: 0.6}}
  - {{name: pile, kind: pile, root: EleutherAI/pile, category: curated, exclude: [Pile-CC], weight: 0.4}}
"""


def mixprep(*argv):
    """Run `mixprep ARGV` in this process; returns (exit status, stdout, stderr)."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """SMALL built with `mixprep run` (cache beside it); shared by the cli/report/inspect/stats tests."""
    root = tmp_path_factory.mktemp("cli")
    mixture = root / "small.yaml"
    mixture.write_text(SMALL)
    out, cache = root / "small", root / "cache"
    rc, stdout, stderr = mixprep("run", "--mixture", mixture, "--data-root", SAMPLES, "--out", out, "--cache", cache,
                                 "--direct_running_mode=in_memory")
    assert rc == 0, stderr[-3000:]
    return {"root": root, "mixture": str(mixture), "out": str(out), "cache": str(cache), "stdout": stdout,
            "stderr": stderr}


# --- sources holding far more than the mixture takes: only a sample is tokenized (sampling/) -----

WORDS = ["river", "map", "weather", "stone", "lantern", "orchard", "signal", "harbor", "copper", "meadow",
         "engine", "ledger", "violet", "thunder", "garden", "pilot", "canvas", "marble", "anchor", "willow"]


def sampled_corpus(root, name, files, docs_per_file, seed):
    """Source ``name`` under ``root``: ``files`` JSONL files of ``docs_per_file`` web-like documents."""
    rng = random.Random(seed)
    os.makedirs(root / name, exist_ok=True)
    for k in range(files):
        with open(root / name / f"part-{k}.jsonl", "w") as f:
            for i in range(docs_per_file):
                # Mostly 3-32 words, a tail of 32-90: a tenth of the tokens in documents of 100+ (web-like).
                n = int(2 ** (rng.uniform(1.5, 5) if rng.random() < 0.95 else rng.uniform(5, 6.5)))
                f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(n)) + f" #{k}.{i}."}) + "\n")


SAMPLED_MIXTURE = """
name: sampled
total_tokens: {total}
seq_len: 128
tokenizer: {tokenizer}
shards: 2
length_buckets: [32]
long_documents: {{threshold: 100, factor: 2.0, cap: 0.8}}
tokenize_whole: {whole}
sources:
  - {{name: a, kind: files, root: a, paths: ["*.jsonl"], weight: 0.6, max_repetition: 1}}
  - {{name: b, kind: files, root: b, paths: ["*.jsonl"], weight: 0.4, max_repetition: 1}}
"""


def sampled_mixture(tmp, total, whole=False):
    """A mixture of ``total`` tokens from sampled_corpus's sources a and b (tokenized whole if ``whole``)."""
    from pipeline.config import load_mixture

    path = tmp / f"mix-{total}-{whole}.yaml"
    path.write_text(SAMPLED_MIXTURE.format(total=total, tokenizer=TOKENIZER, whole=str(whole).lower()))
    return load_mixture(str(path))


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


def local_digest(folder):
    """sha256 of a local mixture's shards and manifest.json, by name."""
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder)) if n.endswith((".bin", ".idx")) or n == "manifest.json"}


def s3_digest(endpoint, bucket, prefix):
    """local_digest of the mixture at s3://bucket/prefix."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    out = {}
    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]:
        name = obj["Key"][len(prefix) + 1:]
        if "/" not in name and (name.endswith((".bin", ".idx")) or name == "manifest.json"):
            out[name] = hashlib.sha256(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()).hexdigest()
    return out


# --- Dataflow: the options a job would be submitted with (nothing is) ------------------------------

BUCKET = "gs://mixprep-demo-bucket"
DATAFLOW = [
    "--runner=DataflowRunner", "--project=mixprep-demo", "--region=us-central1",
    f"--temp_location={BUCKET}/tmp", f"--staging_location={BUCKET}/staging",
    f"--setup_file={os.path.join(ROOT, 'setup.py')}",
]


def on_gcs(files):
    """The sample listing as it would come from gs:// (listing itself needs GCS credentials)."""
    return [dataclasses.replace(f, path=f"{BUCKET}/data/{os.path.relpath(f.path, SAMPLES)}") for f in files]


@pytest.fixture
def bad_root(tmp_path):
    """A private copy of the bad-input set, so tests can add or damage files freely."""
    dst = tmp_path / "bad"
    shutil.copytree(BAD, dst)
    return str(dst)
