"""Tokenizing speed and memory: raw encoder ceilings vs `mixprep run`, side by side (docs/PERFORMANCE.md).

    make bench                 # = python scripts/bench.py --mb 300 --dir ~/.cache/mixprep-bench
    make bench BENCH_MB=20     # a smoke run: a couple of minutes

Once per corpus size, under --dir (outside the repo): a corpus of real text that every machine of
ours has (this interpreter's standard library and site-packages: .py .pyi .rst .md .txt files), written
as the five sources in their hub layouts and formats, and a 50k byte-level BPE trained on part of it
(GPT-2 regex, no normalizer, `<|endoftext|>` = 0, `<|padding|>` = 1, like scripts/train_tokenizer.py).

Then, on the same texts (read by mixprep's own readers) and the same cores:
  (a) raw ceilings: `tokenizers` encode_batch_fast, encode_batch, a process pool of single-threaded
      tokenizers; tiktoken and gigatoken with 1 thread and all threads; mixprep's `Encoder` on each
      backend; the read ceiling (the same files decompressed and parsed to Python strings by
      mixprep's readers in 1 and in all-cores processes, nothing tokenized); the content key of
      dedup (computed for every document while tokenizing), nfc_whitespace and raw, 1 thread; and
      every backend's ids, through the `Encoder`, against `tokenizers`' on every document (with raw
      skipped, unless `key` is too: gigatoken's 1-thread encode and the content key rows alone);
  (b) `mixprep run` (tokenize + mix) on the local runner with all cores (gigatoken, forced with
      MIXPREP_ENCODER), (c) with 1 worker, (c') with all cores and tiktoken, and (d) with all cores
      and `tokenizers`; (b) and (d) each right after its raw ceiling (gigatoken; the process pool,
      with glibc's malloc and with the workers' allocator), so that the targets' ratios are taken per
      pair: this machine's speed moves 10-25% from one minute to the next. The backend a run used is
      read from its manifest (per source, the backends that built its cache parts);
  (e) a 20M-character document against ordinary documents (per-character speed, exact ids);
  (f) (b) again on the corpus repeated 4 times (symbolic links under new names): peak memory, and
      with tiktoken too: issue 25's 5x goal at both sizes;
  (h) the run's fixed cost: (b) over the smallest file of each source's folders, gigatoken and
      tiktoken; with the ideal run (the read ceiling's time + the best raw encoder on all cores, no
      fixed cost) it gives the bound on this machine: fixed cost + ideal time;
  (i) (b) taking 70% of the scarcest source, without dedup, with exact dedup, and with exact +
      near dedup (issue 26): what dedup adds to the run (time, peak memory) and what it removed;
  (g) on that 4x corpus, a stage-2-like mixture (long documents upweighted) that takes a tenth of
      every source: how many tokens it tokenizes per token it takes (sampling.py);
and checks that the fast encoder's ids equal `tokenizers`' on every document. Peak memory is the RSS
of the whole process tree, sampled every 0.1 s. With --repeat N every measurement runs N times and
the tables show medians (peak memory: the largest). Results: JSON + markdown under --dir.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SOURCES = {  # name -> (kind, root, share of documents)
    "refinedweb": ("refinedweb", "tiiuae/falcon-refinedweb", 0.30),
    "c4": ("c4", "allenai/c4", 0.15),
    "redpajama": ("redpajama", "togethercomputer/RedPajama-Data-1T", 0.20),
    "pile": ("pile", "EleutherAI/pile", 0.15),
    "starcoder": ("starcoder", "bigcode/starcoderdata", 0.20),
}
FILE_BYTES = 4 << 20  # text per corpus file: enough files for both workers to stay busy
SUFFIXES = (".py", ".pyi", ".rst", ".md", ".txt")
TRAIN_MB = 40
VOCAB_SIZE = 50_277
CALL_BYTES = 1 << 20
SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]  # ids 0 and 1


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the corpus ---------------------------------------------------------------------------------


def _stable(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def text_files() -> list[Path]:
    """Every text file of this interpreter's libraries, in a stable pseudo-random order."""
    import site
    import sysconfig

    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    seen: dict[str, Path] = {}
    for root in sorted(roots):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                if name.endswith(SUFFIXES):
                    path = os.path.realpath(os.path.join(dirpath, name))
                    seen.setdefault(path, Path(path))
    return sorted(seen.values(), key=lambda p: _stable(str(p)))


def _source_of(path: Path) -> str:
    """Code (.py/.pyi/.md) may go to StarCoder; everything may go anywhere else, by a stable hash."""
    r = (_stable("source:" + str(path)) % 10_000) / 10_000
    acc = 0.0
    for name, (_, _, share) in SOURCES.items():
        acc += share
        if r < acc:
            break
    if name == "starcoder" and path.suffix not in (".py", ".pyi", ".md"):
        name = "refinedweb"
    return name


class _Writer:
    """Writes one source's documents into files of about FILE_BYTES in its hub layout and format."""

    def __init__(self, name: str, root: Path):
        self.name, self.root, self.n, self.docs, self.size = name, root, {}, {}, {}

    def add(self, text: str, path: Path) -> None:
        group = self._group(path)
        self.docs.setdefault(group, []).append((text, path))
        self.size[group] = self.size.get(group, 0) + len(text.encode("utf-8"))
        if self.size[group] >= FILE_BYTES:
            self.flush(group)

    def close(self) -> None:
        for group in list(self.docs):
            if self.docs[group]:
                self.flush(group)

    def _group(self, path: Path) -> str:
        if self.name == "starcoder":
            return "markdown" if path.suffix == ".md" else "python"
        if self.name == "redpajama":
            return ("github", "book", "wikipedia", "common_crawl")[_stable("group:" + str(path)) % 4]
        return ""

    def flush(self, group: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        docs, i = self.docs[group], self.n.get(group, 0)
        self.docs[group], self.size[group], self.n[group] = [], 0, i + 1
        texts = [t for t, _ in docs]
        if self.name == "refinedweb":
            digest = hashlib.sha1(str(i).encode()).hexdigest()[:16]
            out = self.root / "data" / f"train-{i:05d}-of-05534-{digest}.parquet"
            table = pa.table({
                "content": texts,
                "url": [f"https://example.org/{p.name}" for _, p in docs],
                "dump": ["CC-MAIN-2023-06"] * len(docs),
                "segment": [str(_stable(str(p)) % 1000) for _, p in docs],
            })
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out)
        elif self.name == "starcoder":
            out = self.root / group / f"train-{i:05d}-of-00059.parquet"
            table = pa.table({
                "max_stars_repo_path": [p.name for _, p in docs],
                "max_stars_repo_name": [p.parent.name for _, p in docs],
                "max_stars_count": [0] * len(docs),
                "id": [str(_stable(str(p))) for _, p in docs],
                "content": texts,
            })
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out)
        else:
            lines = []
            for text, p in docs:
                if self.name == "c4":
                    rec = {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{p.name}"}
                elif self.name == "pile":
                    rec = {"text": text, "meta": {"pile_set_name": "Github" if p.suffix == ".py" else "StackExchange"}}
                else:
                    rec = {"text": text, "meta": {"source": p.name}}
                lines.append(json.dumps(rec, ensure_ascii=False))
            data = ("\n".join(lines) + "\n").encode("utf-8")
            if self.name == "c4":
                out = self.root / "en" / f"c4-train.{i:05d}-of-01024.json.gz"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
            elif group == "common_crawl":  # RedPajama's zstd subset
                import zstandard

                out = self.root / group / "2023-06" / f"en_head_{i:04d}.json.gz.dedup.classifier.jsonl.zst"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
            elif self.name == "pile":
                import zstandard

                out = self.root / "train" / f"{i:02d}.jsonl.zst"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
            else:
                out = self.root / group / f"{group}_{i:04d}.jsonl"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)


def build_corpus(corpus: Path, mb: int) -> dict:
    """The corpus under `corpus` (reused when complete), and its statistics."""
    done = corpus / "corpus.json"
    if done.exists():
        return json.loads(done.read_text())
    if corpus.exists():
        shutil.rmtree(corpus)
    data = corpus / "data"
    writers = {name: _Writer(name, data / root) for name, (_, root, _) in SOURCES.items()}
    total, docs, files = 0, 0, text_files()
    train = corpus / "train.txt"
    train.parent.mkdir(parents=True, exist_ok=True)
    with open(train, "w", encoding="utf-8") as train_fh:
        for path in files:
            if total >= mb * 1_000_000:
                break
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if not text.strip():
                continue
            n = len(text.encode("utf-8"))
            if total < TRAIN_MB * 1_000_000 and total < mb * 500_000:  # train on (part of) the first half
                train_fh.write(text + "\n")
            writers[_source_of(path)].add(text, path)
            total += n
            docs += 1
    for w in writers.values():
        w.close()
    stats = {"mb": mb, "bytes": total, "documents": docs, "library_files_seen": len(files),
             "files": sum(1 for p in data.rglob("*") if p.is_file())}
    done.write_text(json.dumps(stats, indent=1))
    return stats


def train_tokenizer(corpus: Path) -> Path:
    """A 50k byte-level BPE with scripts/train_tokenizer.py's structure, trained on train.txt."""
    out = corpus / "tokenizer.json"
    if out.exists():
        return out
    # scripts/train_tokenizer.py's structure; not imported: it pins this process to one thread.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train([str(corpus / "train.txt")], trainer=trainer)
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(tokenizer.to_str(), encoding="utf-8")
    os.replace(tmp, out)
    return out


# --- measuring ------------------------------------------------------------------------------------


class _Sampling:
    """A thread running the subclass's ``_run`` while the ``with`` block lasts (``_stop`` tells it to end)."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class PeakRSS(_Sampling):
    """Peak total RSS of a process and all its descendants, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval, self.peak = pid, interval, 0
        super().__init__()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self.pid))
            self._stop.wait(self.interval)


def _tree_rss(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    children: dict[int, list[int]] = {}  # /proc fallback
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(children.get(p, []))
    return total


def load_texts(data_root: Path) -> dict[str, list[str]]:
    """Every document's text, per source, as mixprep's readers see them (same texts as the pipeline)."""
    from pipeline.document import Document
    from pipeline.sources import SourceSpec, list_source_files, read_documents

    texts = {}
    for name, (kind, root, _) in SOURCES.items():
        spec = SourceSpec(name=name, kind=kind, root=root)
        texts[name] = [d.text for sf in list_source_files(spec, str(data_root))
                       for d in read_documents(spec, sf) if isinstance(d, Document)]
    return texts


def calls(texts: list[str], max_bytes: int = CALL_BYTES) -> list[list[str]]:
    from pipeline.tokenizer import batches_by_bytes

    return list(batches_by_bytes(texts, str, max_bytes))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _pool_child(json_path: str, texts_path: str, barrier, results) -> None:
    """One single-threaded `tokenizers` process: load, wait for the others, encode, report."""
    import pickle

    os.environ["RAYON_NUM_THREADS"] = "1"  # rayon's pool with 1 thread; not TOKENIZERS_PARALLELISM=false,
    from tokenizers import Tokenizer  # whose serial path is ~1.4x slower here (measured)

    tok = Tokenizer.from_file(json_path)
    tok.encode_special_tokens = True
    with open(texts_path, "rb") as f:
        texts = pickle.load(f)
    barrier.wait()
    t = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    n = sum(len(e.ids) for call in calls(texts) for e in tok.encode_batch_fast(call, add_special_tokens=False))
    results.put((n, t, time.perf_counter()))


def hf_process_pool(tok_path: Path, texts: list[str], procs: int, work: Path) -> tuple[int, float]:
    """(tokens, seconds): one single-threaded tokenizer per process, each on every procs-th text.

    Fresh (spawned) processes: a forked child of a process that has used `tokenizers`' thread pool
    falls back to its serial path. Timed from the moment all have loaded until the last finishes.
    """
    import multiprocessing as mp
    import pickle

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    children = []
    for i in range(procs):
        path = work / f"pool-texts-{i}.pkl"
        with open(path, "wb") as f:
            pickle.dump(texts[i::procs], f, protocol=pickle.HIGHEST_PROTOCOL)
        children.append(ctx.Process(target=_pool_child, args=(str(tok_path), str(path), barrier, results)))
    got = _start_together(children, barrier, results)
    for i in range(procs):
        (work / f"pool-texts-{i}.pkl").unlink()
    return sum(n for n, _, _ in got), max(t1 for _, _, t1 in got) - min(t0 for _, t0, _ in got)


def _read_child(data_root: str, names: list[str], files: list[tuple[str, int]], barrier, results) -> None:
    """One reader process: every given file through mixprep's own readers (decompress, parse, Python strs)."""
    from pipeline.document import Document
    from pipeline.sources import SourceSpec, list_source_files, read_documents

    specs = {n: SourceSpec(name=n, kind=SOURCES[n][0], root=SOURCES[n][1]) for n in names}
    listed = {(n, i): sf for n in names for i, sf in enumerate(list_source_files(specs[n], data_root))}
    barrier.wait()
    t = time.perf_counter()
    chars = docs = 0
    for name, i in files:
        for d in read_documents(specs[name], listed[(name, i)]):
            if isinstance(d, Document):
                chars += len(d.text)
                docs += 1
    results.put((chars, docs, t, time.perf_counter()))


def read_ceiling(data_root: Path, procs: int) -> tuple[int, int, float]:
    """(characters, documents, seconds): the corpus's files read by ``procs`` spawned processes (each
    every procs-th file, largest first), decompressed and parsed to Python strings, nothing tokenized:
    the rate no `mixprep run` on these files can pass. Timed from all listed until the last finishes."""
    import multiprocessing as mp

    from pipeline.sources import SourceSpec, list_source_files

    work = []
    for name, (kind, root, _) in SOURCES.items():
        for i, sf in enumerate(list_source_files(SourceSpec(name=name, kind=kind, root=root), str(data_root))):
            work.append((sf.size, name, i))
    work.sort(reverse=True)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    shares = [[(n, i) for _, n, i in work[k::procs]] for k in range(procs)]
    children = [ctx.Process(target=_read_child, args=(str(data_root), list(SOURCES), share, barrier, results))
                for share in shares]
    got = _start_together(children, barrier, results)
    return sum(g[0] for g in got), sum(g[1] for g in got), max(g[3] for g in got) - min(g[2] for g in got)


def _gigatoken_threads(giga, texts: list[str], threads: int) -> int:
    """Bare gigatoken `encode` (one numpy array a text), on ``threads`` threads (a tokenizer each: one
    must not encode on two threads at once): tokens."""
    if threads == 1:
        return sum(len(giga.model.encode(t)) for t in texts)
    models = [giga.another() for _ in range(threads)]
    shares = [texts[k::threads] for k in range(threads)]
    counts = [0] * threads

    def run(k):
        counts[k] = sum(len(models[k].encode(t)) for t in shares[k])

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts)


def _identity(encoder, texts: list[str], ref_ids: list[np.ndarray]) -> tuple[int, float]:
    """(documents whose ids differ from `tokenizers`' reference, seconds): every document, through the Encoder."""
    mismatches, k = 0, 0
    t = time.perf_counter()
    for call in calls(texts):
        for got in encoder.encode_batch(call):
            want = ref_ids[k]
            k += 1
            if len(got) != len(want) + 1 or not np.array_equal(got[:-1], want):
                mismatches += 1
    return mismatches, time.perf_counter() - t


def raw_ceilings(tok_path: Path, texts: list[str], cores: int, results: dict, data_root: Path | None = None) -> list:
    """Raw encoders on `texts`, every backend; returns `tokenizers`' ids per document (for the identity
    check). Also: the read ceiling (``data_root``'s files read, no tokenizing), and every backend's
    ids through mixprep's `Encoder` against `tokenizers`' on every document."""
    import tiktoken  # noqa: F401 (fails early with a hint if missing)
    from tokenizers import Tokenizer

    from pipeline.tokenizer import Encoder, load_tokenizer
    from pipeline.tokenizer.fast import _fast_encoding
    from pipeline.tokenizer.giga import _gigatoken_model

    json_text = tok_path.read_text(encoding="utf-8")
    tok = Tokenizer.from_str(json_text)
    tok.encode_special_tokens = True
    n_chars = sum(len(t) for t in texts)
    rows = results["raw"] = {}

    def record(name, tokens, seconds, **extra):
        rows[name] = {"tokens": tokens, "seconds": round(seconds, 3), "tok_per_s": tokens / seconds, **extra}
        log(f"{name}: {tokens / seconds / 1e6:.2f}M tok/s ({seconds:.1f} s)")

    ref_ids: list[np.ndarray] = []

    def hf_fast():
        for call in calls(texts):
            encodings = tok.encode_batch_fast(call, add_special_tokens=False)
            ref_ids.extend(np.array(e.ids, dtype=np.uint32) for e in encodings)

    _, s = timed(hf_fast)
    n_tok = sum(len(a) for a in ref_ids)  # without EOS: the raw encoders do not append it
    record(f"tokenizers encode_batch_fast ({cores} threads)", n_tok, s)
    # Results are counted, not kept: keeping every Encoding would hold many GB.
    n, s = timed(lambda: sum(len(e.ids) for c in calls(texts) for e in tok.encode_batch(c, add_special_tokens=False)))
    record(f"tokenizers encode_batch ({cores} threads)", n, s)
    n, s = hf_process_pool(tok_path, texts, cores, tok_path.parent)
    record(f"tokenizers process pool ({cores} x 1 thread)", n, s)
    results["best_raw_tokenizers"] = max(
        (v for k, v in rows.items() if k.startswith("tokenizers")), key=lambda v: v["tok_per_s"])["tok_per_s"]

    fast = _fast_encoding(json_text)
    assert not isinstance(fast, str), f"the fast encoder cannot be built: {fast}"
    enc = fast.encoding
    n, s = timed(lambda: sum(len(enc.encode_ordinary(t)) for t in texts))
    record("tiktoken encode_ordinary (1 thread)", n, s)
    n, s = timed(lambda: sum(len(ids) for c in calls(texts) for ids in enc.encode_ordinary_batch(c, num_threads=cores)))
    record(f"tiktoken encode_ordinary_batch ({cores} threads)", n, s)

    giga = _gigatoken_model(json_text)
    assert not isinstance(giga, str), f"gigatoken cannot be used: {giga}"
    for threads in (1, cores):
        n, s = timed(lambda: _gigatoken_threads(giga, texts, threads))
        record(f"gigatoken encode ({threads} thread{'s' if threads > 1 else ''})", n, s)

    tokenizer = load_tokenizer(str(tok_path))
    for backend in ("gigatoken", "tiktoken"):
        for threads in (1, cores):
            encoder = Encoder(tokenizer, threads=threads, backend=backend)
            assert encoder.backend == backend, encoder.fast_blocker
            _, s = timed(lambda: [encoder.encode_batch(b) for b in calls(texts)])
            encoder.close()
            record(f"mixprep Encoder, {backend} ({threads} thread{'s' if threads > 1 else ''})", n_tok, s)
    fix_raw_fast(results, cores)
    content_key_rows(texts, n_tok, record)

    # Identity: every backend through the Encoder (cuts, NFC, EOS, numpy) against `tokenizers`' reference.
    results["identity"] = {"documents": len(texts), "characters": n_chars, "tokens": n_tok, "backends": {}}
    for backend in ("gigatoken", "tiktoken", "tokenizers"):
        encoder = Encoder(tokenizer, threads=cores, backend=backend)
        assert encoder.backend == backend, encoder.fast_blocker
        mismatches, s = _identity(encoder, texts, ref_ids)
        encoder.close()
        results["identity"]["backends"][backend] = mismatches
        if backend == "tokenizers":  # the Encoder on `tokenizers`: a raw row as well
            record(f"mixprep Encoder, tokenizers ({cores} threads)", n_tok, s)
        log(f"{backend} through the Encoder vs tokenizers on every document: {mismatches} of {len(texts)} differ")
    results["identity"]["mismatched_documents"] = sum(results["identity"]["backends"].values())

    if data_root is not None:
        for procs in (1, cores):
            chars, docs, s = read_ceiling(data_root, procs)
            assert docs == len(texts) and chars == n_chars, (docs, len(texts), chars, n_chars)
            # As tokens/s: the tokens these files hold / the time to read them (compare with the runs).
            record(f"read ceiling: files read and parsed, no tokenizing ({procs} process{'es' if procs > 1 else ''})",
                   n_tok, s, chars_per_s=chars / s)
        ceiling = f"read ceiling: files read and parsed, no tokenizing ({cores} processes)"
        results["read_ceiling"] = rows[ceiling]["tok_per_s"]
    return ref_ids


def content_key_rows(texts: list[str], n_tok: int, record) -> None:
    """The content key (issue 26): computed for every document while tokenizing, whatever the dedup
    setting; its rate next to the encoders', on the same texts in the same calls."""
    from pipeline.dedup.content import content_keys

    n_chars = sum(len(t) for t in texts)
    for normalization in ("nfc_whitespace", "raw"):
        _, s = timed(lambda: [content_keys(b, normalization) for b in calls(texts)])
        record(f"content key, {normalization} (1 thread)", n_tok, s, chars_per_s=n_chars / s)


def key_rows_alone(tok_path: Path, texts: list[str], results: dict) -> None:
    """With the raw rows skipped: gigatoken's encode (1 thread) and the content key rows, one after the
    other on the same texts (what `dedup_lines` compares), in a few seconds."""
    from pipeline.tokenizer.giga import _gigatoken_model

    giga = _gigatoken_model(tok_path.read_text(encoding="utf-8"))
    assert not isinstance(giga, str), f"gigatoken cannot be used: {giga}"
    rows = results.setdefault("raw", {})

    def record(name, tokens, seconds, **extra):
        rows[name] = {"tokens": tokens, "seconds": round(seconds, 3), "tok_per_s": tokens / seconds, **extra}
        log(f"{name}: {tokens / seconds / 1e6:.2f}M tok/s ({seconds:.1f} s)")

    n_tok, s = timed(lambda: _gigatoken_threads(giga, texts, 1))
    record("gigatoken encode (1 thread)", n_tok, s)
    content_key_rows(texts, n_tok, record)


def fix_raw_fast(results: dict, cores: int) -> None:
    """The fast encoder's raw speed on 1 and on all cores: the default backend's (gigatoken if its rows
    are there, else tiktoken), the better of the bare library and the Encoder."""
    rows = results["raw"]
    name = "gigatoken" if any("gigatoken" in k for k in rows) else "tiktoken"
    one = max(v["tok_per_s"] for k, v in rows.items() if name in k and "(1 thread)" in k)
    many = max(v["tok_per_s"] for k, v in rows.items() if name in k and f"({cores} threads)" in k)
    results["raw_fast_1"], results["raw_fast"], results["raw_fast_speedup"] = one, many, many / one
    results["raw_fast_backend"] = name
    for backend in ("gigatoken", "tiktoken"):
        here = [v["tok_per_s"] for k, v in rows.items() if backend in k and f"({cores} threads)" in k]
        if here:
            results[f"raw_{backend}"] = max(here)


def ideal_bound(results: dict, cores: int) -> None:
    """Per fast backend, the ideal run on this machine: the files read by all cores (the read ceiling's
    time) then encoded by all cores (the backend's best raw rate), with no fixed cost at all: no start,
    no cache writes, no plan, pack or report. No `mixprep run` of these files can be faster."""
    rows = results.get("raw", {})
    read = rows.get(f"read ceiling: files read and parsed, no tokenizing ({cores} processes)")
    if not read:
        return
    n_tok = read["tokens"]
    results["ideal"] = {}
    for backend in ("gigatoken", "tiktoken"):
        best = max((v["tok_per_s"] for k, v in rows.items() if backend in k and f"({cores} threads)" in k), default=0)
        if best:
            seconds = read["seconds"] + n_tok / best
            results["ideal"][backend] = {"read_seconds": read["seconds"], "encode_seconds": round(n_tok / best, 3),
                                         "seconds": round(seconds, 3), "tok_per_s": n_tok / seconds}


def long_document(tok_path: Path, texts: list[str], results: dict) -> None:
    """A 20M-character document (real texts joined) vs the same texts as ordinary documents."""
    from tokenizers import Tokenizer

    from pipeline.tokenizer import Encoder, load_tokenizer

    parts, n = [], 0
    for t in texts:
        parts.append(t)
        n += len(t) + 2
        if n >= 20_000_000:
            break
    doc = "\n\n".join(parts)[:20_000_000]
    ordinary = calls(parts)
    encoder = Encoder(load_tokenizer(str(tok_path)), threads=1)
    _, s_ord = timed(lambda: [encoder.encode_batch(c) for c in ordinary])
    [ids], s_long = timed(lambda: encoder.encode_batch([doc]))
    tok = Tokenizer.from_str(tok_path.read_text(encoding="utf-8"))
    tok.encode_special_tokens = True
    whole, s_whole = timed(lambda: tok.encode_batch_fast([doc], add_special_tokens=False)[0].ids)
    chars_ord = sum(len(p) for p in parts)
    per_char_ratio = (len(doc) / s_long) / (chars_ord / s_ord)
    results["long_document"] = {
        "characters": len(doc), "pieces": len(encoder.pieces(doc)), "backend": encoder.backend,
        "seconds": round(s_long, 3), "ordinary_seconds_same_text": round(s_ord, 3),
        "per_char_speed_ratio": per_char_ratio, "identical_to_whole_encode": ids[:-1].tolist() == whole,
        "tokenizers_whole_encode_seconds": round(s_whole, 3),
    }
    log(f"20M-char document: {per_char_ratio:.2f}x the per-char speed of ordinary documents, "
        f"identical: {results['long_document']['identical_to_whole_encode']}")


DEDUP = {"exact": ["dedup:", "  exact: true"],
         "exact_near": ["dedup:", "  exact: true", "  near: {threshold: 0.8}"]}


def write_mixture(path: Path, tok_path: Path, tokens: dict[str, int], fraction: float = 0.9,
                  long_documents: bool = False, dedup: str | None = None) -> int:
    """A mixture of the five bench sources at their natural shares; returns a total that takes
    ``fraction`` of the scarcest source. ``dedup``: a key of ``DEDUP`` (None: no dedup section)."""
    total = sum(tokens.values())
    names = list(tokens)
    weights = {n: round(tokens[n] / total, 4) for n in names}
    weights[names[-1]] = round(1 - sum(weights[n] for n in names[:-1]), 4)
    lines = ["name: bench", "description: mixprep benchmark (scripts/bench.py)", f"total_tokens: {total}",
             "seq_len: 2048", "seed: 1234", f"tokenizer: {tok_path}", "shards: 4",
             "length_buckets: [2048, 4096, 16384]"]
    if long_documents:  # stage 2's rule (docs/RECIPE.md)
        lines += ["long_documents: {threshold: 4096, factor: 2.0, cap: 0.8}"]
    lines += DEDUP[dedup] if dedup else []
    lines += ["sources:"]
    for n in names:
        kind, root, _ = SOURCES[n]
        category = "code" if n == "starcoder" else "web"
        lines += [f"  - name: {n}", f"    kind: {kind}", f"    root: {root}", f"    category: {category}",
                  f"    weight: {weights[n]}", "    max_repetition: 1.0"]
    path.write_text("\n".join(lines) + "\n")
    return int(fraction * min(tokens[n] / weights[n] for n in names if weights[n] > 0))


def replicate_corpus(data_root: Path, times: int, out: Path) -> Path:
    """``out``/data: every corpus file ``times`` times, as symbolic links under names the readers'
    globs still match (``name-rK`` + the format's suffix): an input ``times`` as large."""
    data = out / "data"
    if data.exists():
        return data
    suffixes = (".json.gz.dedup.classifier.jsonl.zst", ".jsonl.zst", ".json.gz", ".parquet", ".jsonl")
    for path in sorted(p for p in data_root.rglob("*") if p.is_file()):
        rel = path.relative_to(data_root)
        suffix = next(x for x in suffixes if path.name.endswith(x))
        for k in range(times):
            target = data / rel.parent / f"{path.name[: -len(suffix)]}-r{k}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return data


def smallest_files(data_root: Path, out: Path) -> Path:
    """``out``/data: the smallest file of each source's folder (a symbolic link, same name): a run over it is
    the run's fixed cost (start, workers, plan, pack, manifest, report, exit) and little else."""
    data = out / "data"
    if data.exists():
        return data
    from pipeline.sources import SourceSpec, list_source_files

    for name, (kind, root, _) in SOURCES.items():
        smallest: dict[str, object] = {}  # per folder (a subset, a language): every one the source's layout needs
        for sf in list_source_files(SourceSpec(name=name, kind=kind, root=root), str(data_root)):
            if sf.folder not in smallest or sf.size < smallest[sf.folder].size:
                smallest[sf.folder] = sf
        for sf in smallest.values():
            rel = Path(sf.path).relative_to(data_root)
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).symlink_to(sf.path)
    return data


def source_tokens(data_root: Path, tok_path: Path) -> dict[str, int]:
    """Tokens (EOS included) per source of the corpus under ``data_root``, through the `Encoder`."""
    from pipeline.tokenizer import Encoder, load_tokenizer

    encoder = Encoder(load_tokenizer(str(tok_path)), threads=1)
    try:
        return {name: sum(len(ids) for c in calls(texts) for ids in encoder.encode_batch(c))
                for name, texts in load_texts(data_root).items()}
    finally:
        encoder.close()


def pipeline_run(name: str, mixture: Path, data_root: Path, tok_path: Path, total: int, workers: int,
                 work: Path, n_tokens: int, env_extra: dict | None = None, repeat: int = 1) -> dict:
    """``repeat`` runs of `mixprep run`; the row has the median speed and the largest peak memory."""
    return _summary([_pipeline_once(name, mixture, data_root, tok_path, total, workers, work, n_tokens, env_extra)
                     for _ in range(repeat)])


def _summary(rows: list[dict]) -> dict:
    """The median run by speed, with every run's figures and the largest peak memory."""
    row = sorted(rows, key=lambda r: r["tok_per_s"])[len(rows) // 2]
    return {**row, "runs": [{k: r[k] for k in ("seconds", "tok_per_s", "peak_rss_bytes")} for r in rows],
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rows)}


def tokenizers_pairs(mixture: Path, data_root: Path, tok_path: Path, total: int, cores: int, work: Path,
                     n_tokens: int, texts: list[str], repeat: int) -> tuple[dict, list[dict]]:
    """The `tokenizers`-backend run, each time right after the raw process pool on the same texts.

    This machine's speed moves 10-25% from one minute to the next, so the target's ratio is taken
    per pair (median). The pool runs twice: as a user would run it (glibc malloc), and with the
    allocator `mixprep` preloads in its workers, to tell the allocator's share from the pipeline's.
    """
    from pipeline.runners import worker_allocator

    allocator = worker_allocator()
    runs, pairs = [], []
    for _ in range(repeat):
        n, s = hf_process_pool(tok_path, texts, cores, tok_path.parent)
        pair = {"pool_tok_per_s": n / s}
        if allocator:
            before = os.environ.get("LD_PRELOAD")
            os.environ["LD_PRELOAD"] = allocator  # the spawned children start with it
            try:
                n, s = hf_process_pool(tok_path, texts, cores, tok_path.parent)
            finally:
                if before is None:
                    del os.environ["LD_PRELOAD"]
                else:
                    os.environ["LD_PRELOAD"] = before
            pair["pool_allocator_tok_per_s"] = n / s
        runs.append(_pipeline_once("all_cores_tokenizers", mixture, data_root, tok_path, total, cores, work, n_tokens,
                                   {"MIXPREP_ENCODER": "tokenizers"}))
        pair["pipeline_tok_per_s"] = runs[-1]["tok_per_s"]
        pair["allocator"] = allocator or "glibc"
        log("pair: " + ", ".join(f"{k} {v / 1e6:.2f}M" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in pair.items()))
        pairs.append(pair)
    return _summary(runs), pairs


def fast_pairs(mixture: Path, data_root: Path, tok_path: Path, total: int, cores: int, work: Path,
               n_tokens: int, texts: list[str], repeat: int) -> tuple[dict, dict, list[dict]]:
    """The all-cores run and the one-worker run (the default backend: gigatoken), each right after the
    raw encoder on as many threads (the faster of bare gigatoken and the `Encoder`, as in the raw rows)."""
    from pipeline.tokenizer import Encoder, load_tokenizer
    from pipeline.tokenizer.giga import _gigatoken_model

    giga = _gigatoken_model(tok_path.read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(str(tok_path))
    batches = calls(texts)
    runs: dict[int, list[dict]] = {cores: [], 1: []}
    pairs = []
    for _ in range(repeat):
        pair = {}
        for threads, name in ((cores, "all_cores"), (1, "one_worker")):
            encoder = Encoder(tokenizer, threads=threads, backend="gigatoken")
            try:
                n, s_bare = timed(lambda: _gigatoken_threads(giga, texts, threads))
                _, s_enc = timed(lambda: [encoder.encode_batch(c) for c in batches])
            finally:
                encoder.close()
            runs[threads].append(_pipeline_once(name, mixture, data_root, tok_path, total, threads, work, n_tokens,
                                                {"MIXPREP_ENCODER": "gigatoken"}))
            pair[f"raw_fast_{threads}_tok_per_s"] = n / min(s_bare, s_enc)
            pair[f"pipeline_{threads}_tok_per_s"] = runs[threads][-1]["tok_per_s"]
            log(f"pair ({threads} core{'s' if threads > 1 else ''}): raw fast encoder "
                f"{pair[f'raw_fast_{threads}_tok_per_s'] / 1e6:.2f}M, "
                f"pipeline {pair[f'pipeline_{threads}_tok_per_s'] / 1e6:.2f}M")
        pairs.append(pair)
    return _summary(runs[cores]), _summary(runs[1]), pairs


def _start_together(children: list, barrier, results) -> list:
    """Start the child processes, release them at once (``barrier``), return what each put in ``results``."""
    for c in children:
        c.start()
    barrier.wait()
    got = [results.get() for _ in children]
    for c in children:
        c.join()
    return got


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _pipeline_once(name: str, mixture: Path, data_root: Path, tok_path: Path, total: int, workers: int,
                   work: Path, n_tokens: int, env_extra: dict | None = None) -> dict:
    out, cache = work / f"out-{name}", work / f"cache-{name}"
    for d in (out, cache):
        shutil.rmtree(d, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "mixprep"), "run", "--mixture", str(mixture),
           "--data-root", str(data_root),
           "--out", str(out), "--cache", str(cache), "--tokenizer", str(tok_path), "--total-tokens", str(total),
           f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    env = {**os.environ, **(env_extra or {})}
    env.pop("MIXPREP_ENCODE_THREADS", None)
    log(f"{name}: {' '.join(cmd)}")
    t = time.perf_counter()
    with open(work / f"{name}.log", "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        with PeakRSS(proc.pid) as peak:
            rc = proc.wait()
    seconds = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc}); see {work / (name + '.log')}")
    forced = (env_extra or {}).get("MIXPREP_ENCODER") or os.environ.get("MIXPREP_ENCODER")
    row = {"command": " ".join(cmd), "workers": workers, "tokens": n_tokens, "seconds": round(seconds, 3),
           "tok_per_s": n_tokens / seconds, "peak_rss_bytes": peak.peak,
           "env": {"MIXPREP_ENCODER": forced} if forced else {}}
    by_name = json.loads((out / "manifest.json").read_text())["sources"]
    # What built the caches: the run's manifest (per source: backend -> cache parts built with it), and
    # each cache.json (the same record, as the cache holds it).
    used = {b for s in by_name.values() for b in (s.get("encoders") or {})}
    used |= {b for path in cache.glob("*/*/cache.json") for b in json.loads(path.read_text()).get("encoders", {})}
    used = sorted(used)
    row["backend"] = "+".join(used) or "unrecorded"
    if forced and used and used != [forced]:
        raise SystemExit(f"{name}: MIXPREP_ENCODER={forced}, but the manifest says {used} built the caches")
    sources = by_name.values()
    row["tokens_taken"] = sum(s["achieved_tokens"] for s in sources)
    row["tokens_tokenized"] = sum(s["tokenized"]["tokens"] for s in sources)
    row["sampled_sources"] = sum(1 for s in sources if s["tokenized"]["sampled"])
    row["tokenized_per_taken"] = {n: s["tokenized"]["tokens_per_token_taken"] for n, s in by_name.items()}
    dedup = json.loads((out / "manifest.json").read_text()).get("dedup")
    if dedup:  # what dedup removed: exact and near, documents and tokens
        row["dedup_removed"] = {"documents": dedup["documents_removed"], "tokens": dedup["tokens_removed"]}
    log(f"{name}: {n_tokens / seconds / 1e6:.2f}M tok/s, {seconds:.1f} s, peak RSS {peak.peak / 2**30:.2f} GiB")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return row


def targets(r: dict) -> list[tuple[str, str, float, float, bool]]:
    """(target, measured as text, value, bound, met) for the issue's targets."""
    rows = []
    p2, p1 = r["pipeline"].get("all_cores"), r["pipeline"].get("one_worker")
    ptok, pairs = r["pipeline"].get("all_cores_tokenizers"), r.get("tokenizers_pairs")
    if pairs:  # against the pool measured right before each run (or a faster raw path, if one was)
        others = [v["tok_per_s"] for k, v in r.get("raw", {}).items() if k.startswith("tokenizers") and "pool" not in k]
        each = [p["pipeline_tok_per_s"] / max([p["pool_tok_per_s"], *others]) for p in pairs]
        v = _median(each)
        rows.append(("pipeline (tokenizers backend) / best raw tokenizers, paired runs",
                     f"{v:.2f}x (" + ", ".join(f"{x:.2f}" for x in each) + ")", v, 0.90, v >= 0.90))
    elif ptok:
        v = ptok["tok_per_s"] / r["best_raw_tokenizers"]
        rows.append(("pipeline (tokenizers backend) / best raw tokenizers", f"{v:.2f}x", v, 0.90, v >= 0.90))
    if p2:
        v = p2["tok_per_s"] / r["best_raw_tokenizers"]
        rows.append(("pipeline (fast encoder) / best raw tokenizers", f"{v:.2f}x", v, 0.90, v >= 0.90))
        if r.get("fast_pairs"):  # against the raw encoder measured right before each run
            c = r["fast_pairs_cores"]
            each = [p[f"pipeline_{c}_tok_per_s"] / p[f"raw_fast_{c}_tok_per_s"] for p in r["fast_pairs"]]
            v = _median(each)
            rows.append(("pipeline (fast encoder) / raw fast encoder, paired runs",
                         f"{v:.2f}x (" + ", ".join(f"{x:.2f}" for x in each) + ")", v, 0.65, v >= 0.65))
        else:
            v = p2["tok_per_s"] / r["raw_fast"]
            rows.append(("pipeline (fast encoder) / raw fast encoder", f"{v:.2f}x", v, 0.65, v >= 0.65))
        gib = p2["peak_rss_bytes"] / 2**30
        rows.append(("peak memory, all processes (GiB)", f"{gib:.2f}", gib, 2.0, gib <= 2.0))
    fp, c = r.get("fast_pairs"), r.get("fast_pairs_cores")
    if fp and c and all("pipeline_1_tok_per_s" in p for p in fp):  # efficiency against the raw encoder, paired
        e2 = _median([p[f"pipeline_{c}_tok_per_s"] / p[f"raw_fast_{c}_tok_per_s"] for p in fp])
        e1 = _median([p["pipeline_1_tok_per_s"] / p["raw_fast_1_tok_per_s"] for p in fp])
        v = e2 / e1
        rows.append(("pipeline 1->2 workers speed-up / raw encoder's 1->2 speed-up, paired runs",
                     f"(pipeline / raw) {e2:.2f} on {c} cores / {e1:.2f} on 1 = {v:.2f}x", v, 0.9, v >= 0.9))
    elif p2 and p1:
        v = (p2["tok_per_s"] / p1["tok_per_s"]) / r["raw_fast_speedup"]
        rows.append(("pipeline 1->2 workers speed-up / raw encoder's 1->2 speed-up",
                     f"{p2['tok_per_s'] / p1['tok_per_s']:.2f} / {r['raw_fast_speedup']:.2f} = {v:.2f}x",
                     v, 0.9, v >= 0.9))
    tik = r["pipeline"].get("all_cores_tiktoken")
    if p2 and tik:  # issue 25: the whole run at least 5x its rate with tiktoken
        v = p2["tok_per_s"] / tik["tok_per_s"]
        rows.append(("whole run, default backend / whole run, tiktoken (all cores)",
                     f"{p2['tok_per_s'] / 1e6:.2f}M / {tik['tok_per_s'] / 1e6:.2f}M = {v:.2f}x", v, 5.0, v >= 5.0))
    if p2 and r.get("read_ceiling"):  # and at least half the rate of reading the same files, nothing tokenized
        v = p2["tok_per_s"] / r["read_ceiling"]
        rows.append(("whole run, default backend / read ceiling (all cores)",
                     f"{p2['tok_per_s'] / 1e6:.2f}M / {r['read_ceiling'] / 1e6:.2f}M = {v:.2f}x", v, 0.5, v >= 0.5))
    big, big_tik = r["pipeline"].get("all_cores_4x_input"), r["pipeline"].get("all_cores_4x_input_tiktoken")
    if big and big_tik:  # the same two goals at 4x the input: the fixed cost weighs a quarter as much
        v = big["tok_per_s"] / big_tik["tok_per_s"]
        rows.append(("whole run, default backend / whole run, tiktoken (all cores), 4x input",
                     f"{big['tok_per_s'] / 1e6:.2f}M / {big_tik['tok_per_s'] / 1e6:.2f}M = {v:.2f}x", v, 5.0, v >= 5.0))
    if big and r.get("read_ceiling"):
        v = big["tok_per_s"] / r["read_ceiling"]
        rows.append(("whole run, default backend / read ceiling (all cores), 4x input",
                     f"{big['tok_per_s'] / 1e6:.2f}M / {r['read_ceiling'] / 1e6:.2f}M = {v:.2f}x", v, 0.5, v >= 0.5))
    sampled = r["pipeline"].get("sampled_tenth")
    if sampled:
        v = sampled["tokens_tokenized"] / sampled["tokens_taken"]
        rows.append(("mixture taking 1/10 of each source: tokens tokenized / tokens taken, all sources",
                     f"{v:.2f}x", v, 1.2, v <= 1.2))
        per = sampled.get("tokenized_per_taken", {})
        if per:
            worst = max(per, key=per.get)
            rows.append(("the same, the worst source", f"{per[worst]:.2f}x ({worst}; "
                         + ", ".join(f"{n} {x:.2f}x" for n, x in per.items() if n != worst) + ")",
                         per[worst], 1.2, per[worst] <= 1.2))
    big = r["pipeline"].get("all_cores_4x_input")
    if p2 and big:
        v = big["peak_rss_bytes"] / p2["peak_rss_bytes"]
        rows.append(("peak memory, 4x the input / 1x", f"{big['peak_rss_bytes'] / 2**30:.2f} / "
                     f"{p2['peak_rss_bytes'] / 2**30:.2f} GiB = {v:.2f}x", v, 1.2, v <= 1.2))
    ld = r.get("long_document")
    if ld:
        v = ld["per_char_speed_ratio"]
        ok = v >= 0.8 and ld["identical_to_whole_encode"]
        rows.append(("20M-char document: per-char speed / ordinary, identical ids",
                     f"{v:.2f}x, identical={ld['identical_to_whole_encode']}", v, 0.8, ok))
    ident = r.get("identity")
    if ident:
        per = ident.get("backends") or {}
        detail = (" (" + ", ".join(f"{b} {n}" for b, n in per.items()) + f" of {ident['documents']:,})") if per else ""
        rows.append(("Encoder ids != tokenizers ids (documents, every backend)",
                     f"{ident['mismatched_documents']}{detail}",
                     ident["mismatched_documents"], 0, ident["mismatched_documents"] == 0))
    return rows


def markdown(r: dict) -> str:
    c = r["corpus"]
    ident = r.get("identity")  # absent when the raw measurements were skipped
    read_back = (f" (read back: {ident['documents']:,} documents, {ident['characters']:,} characters, "
                 f"{ident['tokens']:,} tokens without EOS)" if ident else "")
    out = [f"# mixprep bench, {r['started']}", "",
           f"Machine: {r['machine']}. Corpus: {c['bytes'] / 1e6:.0f} MB, {c['documents']:,} documents, "
           f"{c['files']} files"
           f"{read_back}. Tokenizer: {r['tokenizer']['vocab_size']:,}-entry byte-level BPE trained on the corpus.", "",
           "| measurement | tokens/s | seconds | peak RSS (GiB) |", "|---|---:|---:|---:|"]
    for name, row in r.get("raw", {}).items():
        extra = f" ({row['chars_per_s'] / 1e6:.0f}M characters/s)" if "chars_per_s" in row else ""
        out.append(f"| raw: {name}{extra} | {row['tok_per_s'] / 1e6:.2f}M | {row['seconds']:.1f} | |")
    for name, row in r["pipeline"].items():
        out.append(f"| `mixprep run` {name} ({row['workers']} worker{'s' if row['workers'] > 1 else ''}, "
                   f"{row['backend']}) | {row['tok_per_s'] / 1e6:.2f}M | {row['seconds']:.1f} | "
                   f"{row['peak_rss_bytes'] / 2**30:.2f} |")
    out += ["", "| target | measured | bound | met |", "|---|---:|---:|---|"]
    for name, text, _, bound, ok in targets(r):
        out.append(f"| {name} | {text} | {bound:g} | {'yes' if ok else 'NO'} |")
    pairs = r.get("tokenizers_pairs") or []
    if pairs and all("pool_allocator_tok_per_s" in p for p in pairs):
        each = [p["pipeline_tok_per_s"] / p["pool_allocator_tok_per_s"] for p in pairs]
        out += ["", f"`tokenizers` backend, paired runs (raw pool with glibc malloc / raw pool with the workers' "
                f"allocator {Path(pairs[0]['allocator']).name} / `mixprep run`): "
                + "; ".join(f"{p['pool_tok_per_s'] / 1e6:.2f}M / {p['pool_allocator_tok_per_s'] / 1e6:.2f}M / "
                            f"{p['pipeline_tok_per_s'] / 1e6:.2f}M" for p in pairs)
                + f". Pipeline / pool on the same allocator: {_median(each):.2f}x ("
                + ", ".join(f"{x:.2f}" for x in each) + ")."]
    if r.get("fast_pairs"):
        c = r.get("fast_pairs_cores", 2)
        out += ["", f"Default backend, paired runs (raw gigatoken on {c} threads / `mixprep run` all_cores; raw on 1 "
                "thread / `mixprep run` one_worker): "
                + "; ".join(f"{p[f'raw_fast_{c}_tok_per_s'] / 1e6:.2f}M / {p[f'pipeline_{c}_tok_per_s'] / 1e6:.2f}M, "
                            f"{p['raw_fast_1_tok_per_s'] / 1e6:.2f}M / {p['pipeline_1_tok_per_s'] / 1e6:.2f}M"
                            for p in r["fast_pairs"]) + "."]
    out += limits(r)
    out += ["", "Pipeline tokens/s = tokens tokenized (with EOS) / wall time of the whole `mixprep run` "
            "(start-up, tokenize, plan, pack, write).", ""]
    out += dedup_lines(r)
    for name, row in r["pipeline"].items():
        out.append(f"- {name}: `{row['command']}`; took {row['tokens_taken']:,} tokens, tokenized "
                   f"{row['tokens_tokenized']:,} ({row['sampled_sources']} sources sampled)"
                   + ("; runs: " + ", ".join(f"{x['tok_per_s'] / 1e6:.2f}M" for x in row["runs"])
                      if len(row["runs"]) > 1 else ""))
    return "\n".join(out) + "\n"


def dedup_lines(r: dict) -> list[str]:
    """Issue 26: dedup's cost next to tokenizing, from rows measured in this run."""
    raw, runs = r.get("raw", {}), r["pipeline"]
    out = []
    key = raw.get("content key, nfc_whitespace (1 thread)")
    encode = raw.get("gigatoken encode (1 thread)")
    if key and encode:
        out.append(f"Content key (nfc_whitespace), computed while tokenizing whatever the dedup setting: "
                   f"{key['seconds']:.1f} s on one core against gigatoken's {encode['seconds']:.1f} s for the "
                   f"same texts ({key['seconds'] / encode['seconds']:.2f}x the encode time).")
    base = runs.get("all_cores_dedup_off")  # the same mixture without dedup
    for kind in DEDUP:
        row = runs.get(f"all_cores_dedup_{kind}")
        if base and row:
            removed = row.get("dedup_removed", {})
            out.append(f"Whole run with {kind.replace('_', ' + ')} dedup: {row['seconds']:.1f} s against "
                       f"{base['seconds']:.1f} s without ({row['seconds'] / base['seconds']:.2f}x), peak RSS "
                       f"{row['peak_rss_bytes'] / 2**30:.2f} against {base['peak_rss_bytes'] / 2**30:.2f} GiB; "
                       f"removed {removed.get('documents', 0):,} documents, {removed.get('tokens', 0):,} tokens.")
    return ["", *out] if out else []


def limits(r: dict) -> list[str]:
    """The measured limit: the run's fixed cost (a run over a tiny input), the ideal run (read + encode
    on all cores, nothing else), and what the two allow against the goals' yardsticks."""
    runs, ideal, out = r["pipeline"], r.get("ideal") or {}, []
    fixed = {b: runs[f"fixed_cost_tiny_input_{b}"] for b in ("gigatoken", "tiktoken")
             if f"fixed_cost_tiny_input_{b}" in runs}
    if fixed:
        out += ["", "Fixed cost (a whole `mixprep run` over the smallest file of each source): "
                + "; ".join(f"{b} {row['seconds']:.1f} s for {row['tokens']:,} tokens" for b, row in fixed.items())
                + "."]
    for b, ib in ideal.items():
        out += ["", f"Ideal run, {b} (read ceiling {ib['read_seconds']:.1f} s + {b}'s best raw rate on all cores "
                f"{ib['encode_seconds']:.1f} s, no fixed cost): {ib['tok_per_s'] / 1e6:.2f}M tok/s"
                + (f", {ib['tok_per_s'] / r['read_ceiling']:.2f}x the read ceiling" if r.get("read_ceiling") else "")
                + "."]
    g, tik, f = ideal.get("gigatoken"), runs.get("all_cores_tiktoken"), fixed.get("gigatoken")
    for name, times in (("1x", 1), ("4x", 4)):
        tik_run = tik if times == 1 else runs.get("all_cores_4x_input_tiktoken")
        if g and f and tik_run:  # the best a run with this fixed cost can do on this machine
            seconds = f["seconds"] + times * g["seconds"]
            rate = times * g["tok_per_s"] * g["seconds"] / seconds
            out += ["", f"Bound at {name} input, gigatoken: fixed cost {f['seconds']:.1f} s + ideal "
                    f"{times * g['seconds']:.1f} s = {rate / 1e6:.2f}M tok/s: "
                    f"{rate / tik_run['tok_per_s']:.2f}x the whole tiktoken run"
                    + (f", {rate / r['read_ceiling']:.2f}x the read ceiling" if r.get("read_ceiling") else "") + "."]
    return out


# --- millions of documents (--scale) -------------------------------------------------------------

SCALE_TOKENS_PER_DOC = 34  # make_corpus.py's documents: ~33 tokens + EOS with the project's tokenizer
SCALE_PHASES = ("tokenize", "plan/select", "pack", "manifest")


class PhaseSampler(_Sampling):
    """Every `interval` s: which phase a `mixprep run` is in (from the files it has written) and the
    RSS of its driver and of every descendant process; keeps wall time and peak RSS per phase."""

    def __init__(self, pid: int, cache: Path, out: Path, shards: int, interval: float = 0.1):
        self.pid, self.cache, self.out, self.shards, self.interval = pid, cache, out, shards, interval
        self.started = time.perf_counter()
        self.ends: dict[str, float] = {}
        self.peaks: dict[str, dict[int, int]] = {p: {} for p in SCALE_PHASES}
        super().__init__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.ends.setdefault("manifest", time.perf_counter() - self.started)

    def phase(self) -> str:
        """The first phase whose end marker is not there yet; each marker is checked once it matters."""
        marks = (("tokenize", lambda: any(self.cache.glob("*/*/cache.json"))),
                 ("plan/select", lambda: (self.out / "_plan.json").exists() or (self.out / "_shards").exists()),
                 ("pack", lambda: len(list((self.out / "_shards").glob("*.json"))) >= self.shards))
        for name, done in marks:
            if name not in self.ends:
                if not done():
                    return name
                self.ends[name] = time.perf_counter() - self.started
        return "manifest"

    def _run(self):
        import psutil

        while not self._stop.is_set():
            phase = self.phase()
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                peaks = self.peaks[phase]
                peaks[proc.pid] = max(peaks.get(proc.pid, 0), rss)
            self._stop.wait(self.interval)

    def rows(self) -> dict:
        """Per phase: seconds, the driver's peak RSS, each worker's (largest first)."""
        out, begin = {}, 0.0
        for name in SCALE_PHASES:
            end = self.ends.get(name, begin)
            peaks = self.peaks[name]
            workers = sorted((v for k, v in peaks.items() if k != self.pid), reverse=True)
            out[name] = {"seconds": round(end - begin, 2), "driver_rss": peaks.get(self.pid, 0), "worker_rss": workers}
            begin = end
        return out


def scale_run(corpus: Path, docs: int, work: Path, workers: int, duplicate_every: int = 0) -> dict:
    """`mixprep run` of make_corpus.py's one-source mixture over ``docs`` documents, 80% taken (of what
    exact dedup leaves, when ``duplicate_every`` plants duplicates)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from make_corpus import make_corpus

    from pipeline.config import load_mixture

    root = make_corpus(corpus, docs, 250_000, 20, str(REPO / "tokenizer" / "tokenizer.json"), duplicate_every)
    mixture = root / "one-source.yaml"
    unique = docs - (docs // duplicate_every if duplicate_every else 0)
    total = int(0.8 * SCALE_TOKENS_PER_DOC * unique)
    shards = load_mixture(str(mixture), {"total_tokens": total}).num_shards
    out, cache = work / f"out-{docs}", work / f"cache-{docs}"
    for d in (out, cache):
        shutil.rmtree(d, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "mixprep"), "run", "--mixture", str(mixture), "--data-root", str(root),
           "--out", str(out), "--cache", str(cache), "--total-tokens", str(total),
           f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    log(f"scale {docs:,} documents: {' '.join(cmd)}")
    t = time.perf_counter()
    with open(work / f"scale-{docs}.log", "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        with PhaseSampler(proc.pid, cache, out, shards) as sampler:
            rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"scale run failed (exit {rc}); see {work / f'scale-{docs}.log'}")
    row = {"documents": docs, "tokens": total, "shards": shards, "seconds": round(time.perf_counter() - t, 2),
           "phases": sampler.rows()}
    for name, p in row["phases"].items():
        log(f"  {name}: {p['seconds']:.1f} s, driver {p['driver_rss'] / 2**20:.0f} MiB, workers "
            + ", ".join(f"{w / 2**20:.0f}" for w in p["worker_rss"]) + " MiB")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return row


def scale_markdown(rows: list[dict]) -> str:
    """One table: per phase and input size, wall time and peak RSS (driver, largest worker)."""
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    head = "| phase | " + " | ".join(f"{r['documents'] / 1e6:g}M docs: s, driver MiB, workers MiB" for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    for name in SCALE_PHASES:
        cells = [f"{r['phases'][name]['seconds']:.1f}, {mib(r['phases'][name]['driver_rss'])}, "
                 + "/".join(mib(w) for w in r["phases"][name]["worker_rss"][:4]) for r in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| whole run | " + " | ".join(f"{r['seconds']:.1f} s ({r['shards']} shards)" for r in rows) + " |")
    return "\n".join(lines) + "\n"


def scale_ratios(small: dict, large: dict) -> dict:
    """Large / small: the largest driver and worker peak over all phases, and time per document."""
    def peak(row, key):
        return max((max(p[key]) if key == "worker_rss" and p[key] else p[key] if key == "driver_rss" else 0)
                   for p in row["phases"].values())

    per_doc = (large["seconds"] / large["documents"]) / (small["seconds"] / small["documents"])
    return {"driver_rss": peak(large, "driver_rss") / peak(small, "driver_rss"),
            "worker_rss": peak(large, "worker_rss") / peak(small, "worker_rss"),
            "seconds_per_document": per_doc,
            **{f"{n}_seconds": large["phases"][n]["seconds"] / max(small["phases"][n]["seconds"], 0.01)
               for n in SCALE_PHASES}}


def scale_bench(docs: int, folder: Path, duplicate_every: int = 0) -> int:
    """``docs`` and 4 x ``docs`` short documents (make_corpus.py), one source: time and memory per phase.
    ``duplicate_every`` K: a share 1/K are exact copies, and the mixture removes them (exact dedup)."""
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=folder))
    workers = os.cpu_count() or 1
    tag = f"-dup{duplicate_every}" if duplicate_every else ""
    rows = [scale_run(folder / f"corpus-{n}{tag}", n, work, workers, duplicate_every) for n in (docs, 4 * docs)]
    ratios = scale_ratios(*rows)
    text = scale_markdown(rows) + "\n4x / 1x: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()) + "\n"
    stem = folder / f"scale-{docs}{tag}-{time.strftime('%Y-%m-%dT%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps({"runs": rows, "ratios": ratios}, indent=1))
    stem.with_suffix(".md").write_text(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    ok = ratios["driver_rss"] <= 1.2 and ratios["worker_rss"] <= 1.2 and ratios["seconds_per_document"] <= 1.0
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=int(os.environ.get("BENCH_MB", 300)), help="corpus size in MB of text")
    ap.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "mixprep-bench", help="cache folder")
    ap.add_argument("--skip", default="",
                    help="comma-separated: raw,pipeline,tiktoken-pipeline,tokenizers-pipeline,fixed,dedup,long,"
                         "sampled,4x,key (raw skipped: its content key rows still run alone, unless key is too)")
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 1)),
                    help="runs of each measurement; the tables show medians")
    ap.add_argument("--pairs", type=int, default=None,
                    help="paired pipeline runs (default: --repeat), e.g. --repeat 1 --pairs 3 for the targets alone")
    ap.add_argument("--scale", type=int, default=0, metavar="N",
                    help="instead: a one-source mixture of N and 4N short documents (make_corpus.py), "
                         "wall time and peak RSS of the driver and each worker per phase")
    ap.add_argument("--scale-duplicates", type=int, default=0, metavar="K",
                    help="with --scale: every K-th document is an exact copy, and the mixture has exact dedup on")
    args = ap.parse_args(argv)
    if args.scale:
        args.dir.mkdir(parents=True, exist_ok=True)
        return scale_bench(args.scale, args.dir, args.scale_duplicates)
    skip = set(filter(None, args.skip.split(",")))
    cores = os.cpu_count() or 1
    corpus = args.dir / f"corpus-{args.mb}MB"
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    log(f"corpus {corpus} ({args.mb} MB): building or reusing")
    stats, s = timed(lambda: build_corpus(corpus, args.mb))
    log(f"corpus: {stats['bytes'] / 1e6:.0f} MB, {stats['documents']} documents, {stats['files']} files ({s:.0f} s)")
    tok_path, s = timed(lambda: train_tokenizer(corpus))
    from pipeline.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tok_path))
    log(f"tokenizer {tok_path}: {tokenizer.vocab_size} entries ({s:.0f} s)")
    data_root = corpus / "data"
    per_source = load_texts(data_root)
    texts = [t for ts in per_source.values() for t in ts]
    machine = f"{cores} cores, {platform.platform()}, Python {platform.python_version()}"
    results: dict = {"started": started, "machine": machine,
                     "corpus": stats, "tokenizer": tokenizer.info(), "pipeline": {}}
    ref = None
    if "raw" not in skip:
        runs = []
        for i in range(max(1, args.repeat)):
            runs.append({})
            got = raw_ceilings(tok_path, texts, cores, runs[-1], data_root)
            ref = got if ref is None else ref
            del got
        results["raw"] = {name: sorted((r["raw"][name] for r in runs), key=lambda v: v["tok_per_s"])[len(runs) // 2]
                          for name in runs[0]["raw"]}
        results["identity"] = runs[0]["identity"]
        results["best_raw_tokenizers"] = max(v["tok_per_s"] for k, v in results["raw"].items()
                                             if k.startswith("tokenizers"))
        results["read_ceiling"] = _median([r["read_ceiling"] for r in runs])
        fix_raw_fast(results, cores)
        ideal_bound(results, cores)
    elif "key" not in skip:
        key_rows_alone(tok_path, texts, results)
    if "long" not in skip:
        long_document(tok_path, texts, results)
    # Tokens per source: from the raw run's ids, or counted now when it was skipped.
    if ref is not None:
        k, tokens = 0, {}
        for name, ts in per_source.items():
            tokens[name] = sum(len(a) + 1 for a in ref[k:k + len(ts)])  # + EOS
            k += len(ts)
        del ref
    else:
        tokens = source_tokens(data_root, tok_path)
    n_tokens = sum(tokens.values())
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.dir))
    mixture = work / "bench.yaml"
    total = write_mixture(mixture, tok_path, tokens)
    rep = max(1, args.pairs if args.pairs is not None else args.repeat)
    if "pipeline" not in skip:
        results["pipeline"]["all_cores"], results["pipeline"]["one_worker"], results["fast_pairs"] = fast_pairs(
            mixture, data_root, tok_path, total, cores, work, n_tokens, texts, rep)
        results["fast_pairs_cores"] = cores
    if "tiktoken-pipeline" not in skip:  # the whole run with the backend before gigatoken, for the 5x goal
        results["pipeline"]["all_cores_tiktoken"] = pipeline_run(
            "all_cores_tiktoken", mixture, data_root, tok_path, total, cores, work, n_tokens,
            {"MIXPREP_ENCODER": "tiktoken"}, repeat=rep)
    if "tokenizers-pipeline" not in skip:
        results["pipeline"]["all_cores_tokenizers"], results["tokenizers_pairs"] = tokenizers_pairs(
            mixture, data_root, tok_path, total, cores, work, n_tokens, texts, rep)
    if "fixed" not in skip:  # the run's fixed cost: a whole run over the smallest file of each source
        tiny_root = smallest_files(data_root, args.dir / f"corpus-{args.mb}MB-tiny")
        tiny_tokens = source_tokens(tiny_root, tok_path)
        tiny = work / "tiny.yaml"
        tiny_total = write_mixture(tiny, tok_path, tiny_tokens)
        for backend in ("gigatoken", "tiktoken"):
            results["pipeline"][f"fixed_cost_tiny_input_{backend}"] = pipeline_run(
                f"fixed_cost_tiny_input_{backend}", tiny, tiny_root, tok_path, tiny_total, cores, work,
                sum(tiny_tokens.values()), {"MIXPREP_ENCODER": backend}, repeat=rep)
    big_root = replicate_corpus(data_root, 4, args.dir / f"corpus-{args.mb}MBx4")
    if "4x" not in skip:
        results["pipeline"]["all_cores_4x_input"] = pipeline_run("all_cores_4x_input", mixture, big_root, tok_path,
                                                                 4 * total, cores, work, 4 * n_tokens,
                                                                 {"MIXPREP_ENCODER": "gigatoken"})
        if "tiktoken-pipeline" not in skip:  # the 5x goal at 4x the input too
            results["pipeline"]["all_cores_4x_input_tiktoken"] = pipeline_run(
                "all_cores_4x_input_tiktoken", mixture, big_root, tok_path, 4 * total, cores, work, 4 * n_tokens,
                {"MIXPREP_ENCODER": "tiktoken"})
    if "dedup" not in skip:  # issue 26: whole runs with dedup, against the same run without
        # 70% of the scarcest source: what dedup removes must not make the mixture ask for more
        # than a source has left (the bench corpus holds files that several packages ship).
        for kind in ("off", *DEDUP):
            dedup_mixture = work / f"dedup-{kind}.yaml"
            dedup_total = write_mixture(dedup_mixture, tok_path, tokens, fraction=0.7,
                                        dedup=None if kind == "off" else kind)
            results["pipeline"][f"all_cores_dedup_{kind}"] = pipeline_run(
                f"all_cores_dedup_{kind}", dedup_mixture, data_root, tok_path, dedup_total, cores, work,
                n_tokens, {"MIXPREP_ENCODER": "gigatoken"}, repeat=rep)
    if "sampled" not in skip:
        # On the 4x corpus: at 1x a tenth of a source is too few documents per length group to
        # sample (sampling.MIN_GROUP_DOCS). Speed here is tokens taken per second; the ratio matters.
        sampled = work / "sampled.yaml"
        small = 4 * write_mixture(sampled, tok_path, tokens, fraction=0.1, long_documents=True)
        results["pipeline"]["sampled_tenth"] = pipeline_run("sampled_tenth", sampled, big_root, tok_path, small,
                                                            cores, work, small)
    shutil.rmtree(work, ignore_errors=True)
    results["targets"] = [{"target": t, "measured": m, "value": v, "bound": b, "met": ok}
                          for t, m, v, b, ok in targets(results)]
    stem = args.dir / f"results-{args.mb}MB-{started.replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"results: {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
