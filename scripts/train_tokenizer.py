"""Train the small byte-level BPE tokenizer that mixprep's tests use (tokenizer/tokenizer.json).

    python scripts/train_tokenizer.py --data-root samples --out tokenizer/tokenizer.json

It has the structure of GPT-2 / GPT-NeoX-20B: byte-level BPE over the GPT-2 pre-tokenization regex,
no normalizer, no unknown token, `<|endoftext|>` = 0 and `<|padding|>` = 1. Production runs use the
GPT-NeoX-20B tokenizer.json instead (see tokenizer/README.md).

Training is deterministic: one thread, files in sorted order, documents in file order. Running it
twice on the same data root gives byte-identical files (`--check-determinism` trains twice and
compares). This script reads the sample files itself (parquet `content`/`body` columns; jsonl,
json.gz, jsonl.zst `text`/`body` fields) so that it depends on nothing but tokenizers and pyarrow.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

# Rayon reads these once, when tokenizers starts its thread pool: set them before the import. One
# thread makes the order in which word and pair counts are merged, and so the output, reproducible.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]  # ids 0 and 1, as in GPT-NeoX-20B
TEXT_COLUMNS = ("content", "body")  # parquet (RefinedWeb, StarCoder use `content`)
TEXT_FIELDS = ("text", "body")  # json lines (C4, RedPajama, the Pile use `text`)
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")


def sample_files(data_root: Path) -> list[Path]:
    """Every parquet and json-lines file under `data_root`, in sorted (path) order."""
    files = [
        p
        for p in data_root.rglob("*")
        if p.is_file() and (p.name.endswith(".parquet") or p.name.endswith(JSON_SUFFIXES))
    ]
    return sorted(files, key=lambda p: p.relative_to(data_root).as_posix())


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8")
    return open(path, encoding="utf-8")


def _parquet_texts(path: Path):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    column = next((c for c in TEXT_COLUMNS if c in pf.schema_arrow.names), None)
    if column is None:
        raise SystemExit(f"{path}: no text column; expected one of {TEXT_COLUMNS}, found {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text:
                yield text


def _json_texts(path: Path):
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{line_no}: not a JSON line ({e})") from None
            text = next((record[f] for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
            if text is None:
                raise SystemExit(f"{path}:{line_no}: no text field; expected one of {TEXT_FIELDS}")
            if text:
                yield text


def iter_documents(files: list[Path], stats: dict):
    """Yield the text of every document in `files`, counting documents and UTF-8 bytes in `stats`."""
    for path in files:
        texts = _parquet_texts(path) if path.name.endswith(".parquet") else _json_texts(path)
        for text in texts:
            stats["documents"] += 1
            stats["bytes"] += len(text.encode("utf-8", "surrogatepass"))
            yield text


def build_tokenizer() -> Tokenizer:
    """An untrained tokenizer with GPT-2's byte-level pipeline (no normalizer, no prefix space)."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = None
    return tokenizer


def train(files: list[Path], vocab_size: int) -> tuple[str, dict]:
    """Train on `files`; return the tokenizer's JSON text and corpus statistics."""
    tokenizer = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # pairs seen once are not merged: the vocabulary may stop short of vocab_size
        special_tokens=SPECIAL_TOKENS,  # listed first, so they take ids 0 and 1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    stats = {"files": len(files), "documents": 0, "bytes": 0}
    tokenizer.train_from_iterator(iter_documents(files, stats), trainer=trainer)
    for want_id, token in enumerate(SPECIAL_TOKENS):
        got = tokenizer.token_to_id(token)
        if got != want_id:
            raise SystemExit(f"trained tokenizer has {token!r} at id {got}, expected {want_id}")
    return tokenizer.to_str(pretty=True) + "\n", stats


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, type=Path, help="folder of sample files")
    parser.add_argument("--out", required=True, type=Path, help="where to write tokenizer.json")
    parser.add_argument("--vocab-size", type=int, default=8192, help="upper bound, including the 2 special tokens")
    parser.add_argument(
        "--check-determinism", action="store_true", help="train twice and fail unless the outputs are identical"
    )
    args = parser.parse_args(argv)

    files = sample_files(args.data_root)
    if not files:
        raise SystemExit(f"{args.data_root}: no .parquet or json-lines files found")
    text, stats = train(files, args.vocab_size)
    if args.check_determinism:
        again, _ = train(files, args.vocab_size)
        if again != text:
            raise SystemExit("two training runs gave different tokenizer.json files: training is not deterministic")
    write_atomically(args.out, text)

    data = text.encode("utf-8")
    vocab_size = Tokenizer.from_str(text).get_vocab_size(with_added_tokens=True)
    print(
        f"wrote {args.out}: vocab_size={vocab_size}, sha256={hashlib.sha256(data).hexdigest()}, "
        f"trained on {stats['documents']} documents ({stats['bytes']} bytes) from {stats['files']} files"
        + (", determinism checked" if args.check_determinism else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
