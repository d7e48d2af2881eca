"""The figures docs/DEDUP.md quotes: ``python -m pipeline.dedup.measure [--bases N] [--seed S]``.

- speed: content keys (MB/s of text) and the tokenizer on the bundled samples' text, one thread each;
  MinHash signatures (documents/s, tokens/s) of the labelled corpus's token ids, batched and one by one,
  and datasketch on the same documents when it is installed (the same hash family, checked equal, and
  its default: SHA-1 of each n-gram's bytes);
- the S-curve: P(joined | s) for LSH alone and verified;
- quality: precision / recall per category of the labelled corpus, exact and near, for a few thresholds.
Times are the best of 3 runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import unicodedata

import numpy as np

from ..tokenizer import Encoder, load_tokenizer
from .content import content_key, content_keys
from .labelled import build_corpus, resolve_corpus, score, tokenizer_words
from .minhash import DEFAULT_PARAMS, ngram_hashes, params_for, removal_probability, signature, signatures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, "tokenizer", "tokenizer.json")
SAMPLES = os.path.join(ROOT, "samples")


def best_of(f, runs: int = 3):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def sample_texts() -> list[str]:
    """Every document of the bundled samples (RefinedWeb, C4, RedPajama, the Pile, StarCoder)."""
    from ..document import Document
    from ..sources import SourceSpec, list_source_files, read_documents

    specs = [SourceSpec("refinedweb", "refinedweb", root="tiiuae/falcon-refinedweb"),
             SourceSpec("c4", "c4", root="allenai/c4"),
             SourceSpec("redpajama", "redpajama", root="togethercomputer/RedPajama-Data-1T"),
             SourceSpec("pile", "pile", root="EleutherAI/pile"),
             SourceSpec("starcoder", "starcoder", root="bigcode/starcoderdata")]
    texts = []
    for spec in specs:
        for sf in list_source_files(spec, SAMPLES):
            texts += [d.text for d in read_documents(spec, sf) if isinstance(d, Document)]
    return texts


def content_key_kinds(texts: list[str]) -> None:
    """content_keys (the cache's batch path) against content_key per text (normalize on str, the first
    version's path), per kind of text: ASCII, non-ASCII already NFC, not NFC."""
    kinds = {"ascii": [t for t in texts if t.isascii()],
             "non-ascii, NFC": [t for t in texts if not t.isascii() and unicodedata.is_normalized("NFC", t)],
             "not NFC": [t for t in texts if not unicodedata.is_normalized("NFC", t)], "all": texts}
    for kind, ts in kinds.items():
        mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in ts) / 1e6
        t_ref, _ = best_of(lambda: [content_key(t) for t in ts], 5)
        t_batch, _ = best_of(lambda: content_keys(ts), 5)
        print(f"content keys, {kind:15s} {len(ts):5d} docs {mb:5.1f} MB: per text {mb / t_ref:6.1f} MB/s, "
              f"batch {mb / t_batch:6.1f} MB/s")


def speed(corpus, ids) -> None:
    tok = load_tokenizer(TOKENIZER)
    texts = sample_texts()
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"## Speed (one thread)\n\nsamples: {len(texts)} documents, {mb:.1f} MB of text")
    for norm in ("nfc_whitespace", "raw"):
        t, _ = best_of(lambda: content_keys(texts, norm))
        print(f"content keys, {norm:15s} {mb / t:8.1f} MB/s")
    content_key_kinds(texts)
    encoder = Encoder(tok)
    t, sample_ids = best_of(lambda: encoder.encode_batch(texts), 2)
    n = sum(map(len, sample_ids))
    print(f"tokenizer ({encoder.backend}), {mb / t:8.1f} MB/s, {n / t / 1e6:.2f} M tokens/s")
    t, _ = best_of(lambda: signatures(sample_ids))
    print(f"signatures, samples (batched)  {len(sample_ids) / t:8.0f} docs/s, {n / t / 1e6:.2f} M tokens/s")

    n = sum(map(len, ids))
    print(f"\nlabelled corpus: {len(ids)} documents, {n} tokens")
    t_np, sigs = best_of(lambda: signatures(ids))
    print(f"signatures (batched)           {len(ids) / t_np:8.0f} docs/s, {n / t_np / 1e6:.2f} M tokens/s")
    t, _ = best_of(lambda: [signature(x) for x in ids])
    print(f"signature (one by one)         {len(ids) / t:8.0f} docs/s, {n / t / 1e6:.2f} M tokens/s")
    try:
        import datasketch
    except ImportError:
        print("datasketch: not installed, not compared")
        return
    a, b = DEFAULT_PARAMS.permutations()
    perms = np.array([a, b])

    def same_family():
        out = []
        for x in ids:
            m = datasketch.MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=int, permutations=perms)
            m.update_batch(ngram_hashes(x).tolist())
            out.append(m.hashvalues)
        return np.array(out)

    def sha1_ngrams():
        for x in ids:
            raw = x[:-1].astype("<u4").tobytes()
            m = datasketch.MinHash(num_perm=128, seed=1, scheme="affine32", permutations=perms)
            m.update_batch([raw[4 * k:4 * k + 20] for k in range(max(1, len(raw) // 4 - 4))])

    t, ds = best_of(same_family, 1)
    print(f"datasketch {datasketch.__version__}, same hashes      {len(ids) / t:8.0f} docs/s: numpy is "
          f"{t / t_np:.1f}x faster; signatures equal: {bool((ds == sigs).all())}")
    t, _ = best_of(sha1_ngrams, 1)
    print(f"datasketch, SHA-1 of n-gram bytes {len(ids) / t:8.0f} docs/s: numpy is {t / t_np:.1f}x faster")


def curve() -> None:
    print("\n## P(joined | Jaccard s)\n\n| setting | " + " | ".join(f"s={s}" for s in (0.5, 0.6, 0.7, 0.8, 0.9))
          + " |\n|---|---|---|---|---|---|")
    for threshold in (None, 0.8, 0.7, 0.6, 0.5):
        p = dataclasses.replace(DEFAULT_PARAMS, threshold=None) if threshold is None else params_for(threshold)
        name = f"{p.bands} x {p.rows} bands" + ("" if threshold is None else f", verified at {threshold}")
        print(f"| {name} | " + " | ".join(f"{removal_probability(s, p):.4f}" for s in (0.5, 0.6, 0.7, 0.8, 0.9))
              + " |")


def quality(corpus, ids) -> None:
    settings = [("exact, nfc_whitespace", None, "nfc_whitespace"), ("exact, raw", None, "raw")]
    settings += [("near, 16 x 8 alone", dataclasses.replace(DEFAULT_PARAMS, threshold=None), None)]
    for t in (0.8, 0.7, 0.6, 0.5):
        p = params_for(t)
        settings.append((f"near, {p.bands} x {p.rows} verified at {t}", p, None))
    settings += [("exact + near at 0.8 (defaults)", DEFAULT_PARAMS, "nfc_whitespace")]
    cats = corpus.categories() + ["all"]
    print(f"\n## Labelled corpus (seed {corpus.seed}, {len(corpus.docs)} documents): precision / recall\n")
    print("| setting | " + " | ".join(cats) + " |\n|---|" + "---|" * len(cats))
    for name, params, norm in settings:
        kept, _ = resolve_corpus(corpus, ids, params, norm)
        sc = score(corpus, kept)
        print(f"| {name} | " + " | ".join(f"{sc[c].precision:.2f} / {sc[c].recall:.2f}" for c in cats) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    tok = load_tokenizer(TOKENIZER)
    corpus = build_corpus(args.seed, args.bases, vocabulary=tokenizer_words(tok))
    ids = Encoder(tok).encode_batch(corpus.texts())
    if not args.skip_speed:
        speed(corpus, ids)
    curve()
    quality(corpus, ids)


if __name__ == "__main__":
    main()
