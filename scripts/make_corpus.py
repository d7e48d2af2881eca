"""Write a corpus of many short documents in RefinedWeb's hub layout, to run mixprep at millions of
documents (scripts/bench.py --scale). Deterministic: the same arguments write the same bytes.

    python scripts/make_corpus.py --docs 5000000 --out ~/.cache/mixprep-scale/5M

Writes OUT/tiiuae/falcon-refinedweb/data/train-NNNNN-of-MMMMM.parquet (RefinedWeb's columns:
content, url, timestamp, dump, segment, image_urls), --docs-per-file documents a file, each a few
words (--words, ~30 tokens with the project's tokenizer) drawn from a fixed word list, and
OUT/one-source.yaml, a mixture of that one source. Nothing is written inside the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = "tiiuae/falcon-refinedweb"
WORDS = ("the of and to in is was for on that with as by at from his her are were be this which an or "
         "had not but first one their its new after who they have has been two all other she also time "
         "year city world people state school music river water house light early north south small "
         "large between during under before over while where when family team game film book").split()


def documents(first: int, count: int, words: int, duplicate_every: int = 0) -> list[str]:
    """Documents ``first`` .. ``first + count - 1``: ``words`` words each, drawn from a generator
    seeded by the first document's index, so any file can be written alone. With ``duplicate_every``
    K, document i is a copy of document i - 1 whenever i % K == K - 1 (a share 1/K of exact duplicates;
    the two are in one file when files start at multiples of K)."""
    rng = np.random.default_rng(first)
    vocab = np.array(WORDS, dtype=object)
    picks = vocab[rng.integers(0, len(WORDS), size=(count, words))]
    out = [f"doc {first + i}: " + " ".join(row) + "." for i, row in enumerate(picks)]
    for i in range(1, count) if duplicate_every else ():
        if (first + i) % duplicate_every == duplicate_every - 1:
            out[i] = out[i - 1]
    return out


def write_file(path: Path, first: int, count: int, words: int, duplicate_every: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.arange(first, first + count)
    table = pa.table({
        "content": pa.array(documents(first, count, words, duplicate_every), pa.string()),
        "url": pa.array([f"https://example.org/{i}" for i in ids.tolist()], pa.string()),
        "timestamp": pa.array(np.full(count, 1_672_531_200_000, dtype="datetime64[ms]")),
        "dump": pa.array(["CC-MAIN-2023-06"] * count, pa.string()),
        "segment": pa.array(["1674764494974.75"] * count, pa.string()),
        "image_urls": pa.array([[]] * count, pa.list_(pa.list_(pa.string()))),
    })
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=65_536)
    tmp.rename(path)


def mixture(out: Path, tokenizer: str, dedup: bool = False) -> Path:
    path = out / "one-source.yaml"
    path.write_text("\n".join([
        "name: scale", "description: one source of many short documents (scripts/make_corpus.py)",
        "total_tokens: 1000000", "seq_len: 2048", "seed: 1234", f"tokenizer: {tokenizer}",
        "tokens_per_shard: 4000000", "tokenize_whole: true", "length_buckets: [2048, 4096, 16384]",
        *(["dedup: {exact: true}"] if dedup else []), "sources:",
        "  - name: refinedweb", "    kind: refinedweb", f"    root: {ROOT}", "    category: web",
        "    weight: 1.0", "    max_repetition: 1.0", ""]))
    return path


def make_corpus(out: Path, docs: int, per_file: int, words: int, tokenizer: str, duplicate_every: int = 0) -> Path:
    """Write the corpus (files already there are kept) and its mixture (with exact dedup when the corpus
    holds duplicates); return the data root."""
    data = out / ROOT / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = -(-docs // per_file)
    for k in range(files):
        path = data / f"train-{k:05d}-of-{files:05d}.parquet"
        if not path.exists():
            first = k * per_file
            write_file(path, first, min(per_file, docs - first), words, duplicate_every)
    mixture(out, tokenizer, dedup=bool(duplicate_every))
    return out


def main(argv=None) -> int:
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--docs-per-file", type=int, default=250_000)
    ap.add_argument("--words", type=int, default=20)
    ap.add_argument("--tokenizer", default=str(repo / "tokenizer" / "tokenizer.json"))
    ap.add_argument("--duplicate-every", type=int, default=0, metavar="K",
                    help="every K-th document copies the one before it; the mixture then has exact dedup on")
    args = ap.parse_args(argv)
    if args.out.resolve().is_relative_to(repo):
        raise SystemExit(f"--out {args.out} is inside the repository; write the corpus elsewhere")
    print(make_corpus(args.out, args.docs, args.docs_per_file, args.words, args.tokenizer, args.duplicate_every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
