"""Look inside a mixture: which documents a sample holds, and where a document's copies landed.

    mixprep inspect out/stage1 --sample 17                         # pieces, doc ids, decoded text
    mixprep inspect out/stage1 --doc pile:train/00.jsonl.zst:17    # every copy: shard, sample, offsets

Both read the provenance ``pack.py`` writes beside each shard (``_provenance/NAME.refs.npy``: the shard's
document copies in stream order), the manifest (shard order, sample width) and the sources' token
caches (document ids, and the tokens, which are checked against the shard's). Samples are numbered
globally in the manifest's shard order, as ``MixtureDataset`` numbers them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .cache import TokenCache
from .errors import FormatError, MixprepError
from .layout import (
    MANIFEST,
    TOKENIZER_FILE,
    cache_dir,
    dedup_path,
    is_finished_cache,
    manifest_path,
    provenance_rel,
    shard_prefix,
    sidecar_path,
)
from .mmidx import MMIDXReader
from .pack import PROVENANCE_DTYPE
from .storage import read_json

__all__ = ["Piece", "Provenance", "inspect_sample", "inspect_doc", "sample_pieces", "doc_copies"]


@dataclasses.dataclass(frozen=True)
class Piece:
    """The part of one document copy that falls in one sample."""

    source: str
    part: int  # cache part (input file index)
    row: int  # row in the part's document table and token file
    n: int  # the document's tokens (EOS included)
    doc_start: int  # this piece is tokens [doc_start, doc_end) of the document
    doc_end: int
    sample_start: int  # ... at tokens [sample_start, sample_end) of the sample
    sample_end: int


class Provenance:
    """A mixture folder's manifest and per-shard provenance, opened for lookups."""

    def __init__(self, out: str):
        path = manifest_path(out)
        if not storage.exists(path):
            raise FormatError(f"{out}: no {MANIFEST}: not a finished mixture folder (run `mixprep run` first, or "
                              "point at the folder it wrote).")
        self.out = out
        self.manifest = read_json(path)
        if self.manifest.get("layout", "samples") != "samples":
            raise FormatError(f"{out}: a `layout: {self.manifest['layout']}` mixture: its entries are documents, not "
                              "samples (Megatron cuts the samples itself); `mixprep inspect` reads `layout: samples` "
                              "mixtures only. The provenance files list each entry's document.")
        self.width = self.manifest["sample_tokens"]
        self.shards = [s["prefix"] for s in self.manifest["shards"]]
        counts = [s["sequences"] for s in self.manifest["shards"]]
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._refs: dict[int, tuple[np.ndarray, np.ndarray, list[str]]] = {}

    @property
    def samples(self) -> int:
        return int(self.starts[-1])

    def refs(self, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Shard k's copies in stream order, their stream start offsets, and the source names they index."""
        if k not in self._refs:
            name = self.shards[k]
            sidecar = sidecar_path(self.out, name)
            record = read_json(sidecar) if storage.exists(sidecar) else {}
            prov = record.get("provenance")
            if record.get("plan_hash") != self.manifest["plan_hash"] or not prov:
                raise FormatError(
                    f"{sidecar}: no provenance for this mixture (plan {self.manifest['plan_hash'][:12]}): the shard "
                    "was written by a mixprep without provenance, or by another plan. Rerun `mixprep run` on the "
                    "same config to write it (the shards' bytes do not change).")
            path = storage.join(self.out, prov["file"])
            try:
                with storage.open_read(path) as f:
                    data = f.read()
            except Exception as e:  # OSError locally, BeamIOError on object stores
                raise FormatError(f"{path}: cannot read the shard's provenance ({e}). Rerun `mixprep run` "
                                  "on the same config to rewrite it.") from None
            if hashlib.sha256(data).hexdigest() != prov["sha256"]:
                raise FormatError(f"{path}: sha256 does not match the one in {sidecar}: the file changed or is "
                                  "damaged. Rerun `mixprep run` on the same config to rewrite it.")
            table = np.load(io.BytesIO(data), allow_pickle=False)
            if table.dtype != PROVENANCE_DTYPE:
                raise FormatError(f"{path}: expected records {PROVENANCE_DTYPE}, found {table.dtype}.")
            offsets = np.concatenate([[0], np.cumsum(table["n"], dtype=np.int64)])
            self._refs[k] = (table, offsets, list(prov["sources"]))
        return self._refs[k]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, entry) of global sample ``index``."""
        if not 0 <= index < self.samples:
            raise MixprepError(f"sample {index} is out of range: {self.out} holds samples 0..{self.samples - 1}.")
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        return k, index - int(self.starts[k])


def sample_pieces(prov: Provenance, index: int) -> tuple[int, int, list[Piece]]:
    """(shard, entry, pieces) of global sample ``index``, pieces in sample order."""
    k, j = prov.locate(index)
    table, offsets, names = prov.refs(k)
    lo, hi = j * prov.width, (j + 1) * prov.width
    first = int(np.searchsorted(offsets, lo, side="right")) - 1
    pieces = []
    i = first
    while i < len(table) and offsets[i] < hi:
        start, n = int(offsets[i]), int(table["n"][i])
        a, b = max(lo, start), min(hi, start + n)
        pieces.append(Piece(names[int(table["source"][i])], int(table["part"][i]), int(table["row"][i]), n,
                            a - start, b - start, a - lo, b - lo))
        i += 1
    return k, j, pieces


class _Caches:
    """The mixture's token caches, opened on first use."""

    def __init__(self, manifest: dict, cache_root: str):
        self._manifest, self._root, self._open = manifest, cache_root, {}

    def __call__(self, source: str) -> TokenCache:
        if source not in self._open:
            s = self._manifest["sources"].get(source)
            if s is None:
                raise MixprepError(f"source {source!r} is not in this mixture; its sources are "
                                   f"{', '.join(self._manifest['sources'])}.")
            directory = cache_dir(self._root, source, s["cache_fingerprint"])
            if not is_finished_cache(directory):
                raise FormatError(f"{directory}: the token cache of {source!r} this mixture was built from is not "
                                  "there. Pass the cache folder the run used (`--cache DIR`).")
            self._open[source] = TokenCache(directory)
        return self._open[source]

    def doc_row(self, source: str, part: int, row: int) -> dict:
        table = self(source).doc_table(part, columns=["doc_id", "subset"]).slice(row, 1).to_pylist()
        return table[0]

    def close(self):
        for c in self._open.values():
            c.close()


def _load_tokenizer(manifest: dict, path: str | None, out: str = ""):
    """The manifest's tokenizer: ``path`` (checked by sha256), else the copy the run left beside its
    shards, else its recorded name if that is a file here (or ``small``, the bundled test tokenizer)."""
    from .bundled import SMALL_TOKENIZER, small_tokenizer_path
    from .tokenizer import load_tokenizer

    want = manifest["tokenizer"]["sha256"]
    if path is None:
        name = manifest["tokenizer"]["name"]
        found = [p for p in (os.path.join(out, TOKENIZER_FILE) if out and not storage.is_remote(out) else "",
                             small_tokenizer_path() if name == SMALL_TOKENIZER else name) if p and os.path.isfile(p)]
        if not found:
            return None
        path = found[0]
    tok = load_tokenizer(path)
    if tok.sha256 != want:
        raise MixprepError(f"tokenizer {path} (sha256 {tok.sha256[:16]}…) is not the one this mixture was "
                           f"tokenized with (sha256 {want[:16]}…, recorded as {manifest['tokenizer']['name']!r}). "
                           "Pass that tokenizer.json with --tokenizer.")
    return tok


def _where(prov: Provenance, k: int, stream_start: int, stream_end: int) -> str:
    """Global samples (and offsets) that stream tokens [start, end) of shard k fall in."""
    entries = int(prov.starts[k + 1] - prov.starts[k])
    parts = []
    j = stream_start // prov.width
    while j * prov.width < stream_end:
        a = max(stream_start, j * prov.width) - j * prov.width
        b = min(stream_end, (j + 1) * prov.width) - j * prov.width
        if j >= entries:
            parts.append(f"{b - a:,} tokens in the shard's tail (not written)")
            break
        parts.append(f"sample {int(prov.starts[k]) + j} [{a}, {b})")
        j += 1
    if len(parts) > 3:  # a long document: its first and last samples, and the whole ones between
        parts = [parts[0], f"{len(parts) - 2} whole samples", parts[-1]]
    return " + ".join(parts)


def inspect_sample(out: str, index: int, cache_root: str, tokenizer: str | None = None, text: bool = True) -> str:
    """What global sample ``index`` holds, as text: its document pieces (and their decoded text)."""
    prov = Provenance(out)
    m = prov.manifest
    k, j, pieces = sample_pieces(prov, index)
    caches = _Caches(m, cache_root)
    tok = _load_tokenizer(m, tokenizer, out) if text else None
    try:
        with MMIDXReader(shard_prefix(out, prov.shards[k])) as shard:
            sample = np.asarray(shard[j])
            cached = np.concatenate([caches(p.source).tokens(p.part)[p.row][p.doc_start:p.doc_end] for p in pieces])
            if not np.array_equal(sample.astype(np.int64), cached.astype(np.int64)):
                raise FormatError(f"{out}/{provenance_rel(prov.shards[k])}: sample {index}'s tokens differ "
                                  "from the cached documents its provenance names: the shard or the caches changed "
                                  "since the run. Check with `mixprep verify`.")
            lines = [f"{m['name']} sample {index} of {prov.samples:,}: shard {prov.shards[k]} entry {j}; "
                     f"{len(sample):,} tokens from {len(pieces)} document piece{'s' * (len(pieces) != 1)}", ""]
            rows = [("sample tokens", "source", "doc_id", "subset", "document tokens", "")]
            info = []
            for p in pieces:
                d = caches.doc_row(p.source, p.part, p.row)
                info.append(d)
                note = "whole" if p.doc_start == 0 and p.doc_end == p.n else (
                    "starts earlier" if p.doc_start > 0 and p.doc_end == p.n else
                    "continues after" if p.doc_start == 0 else "starts earlier, continues after")
                rows.append((f"[{p.sample_start}, {p.sample_end})", p.source, d["doc_id"], d["subset"] or "-",
                             f"[{p.doc_start}, {p.doc_end}) of {p.n:,}", note))
            widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
            if text:
                if tok is None:
                    lines += ["", f"(text not decoded: the tokenizer {m['tokenizer']['name']!r} is not a file here; "
                                  "pass it with --tokenizer)"]
                else:
                    for p, d in zip(pieces, info):
                        ids = cached[p.sample_start:p.sample_end].tolist()
                        lines += ["", f"──── [{p.sample_start}, {p.sample_end}) {p.source} {d['doc_id']} "
                                      f"(document tokens {p.doc_start}-{p.doc_end} of {p.n:,}) ────",
                                  tok.tokenizer.decode(ids, skip_special_tokens=False)]
            return "\n".join(lines)
    finally:
        caches.close()


def doc_copies(prov: Provenance, source: str, part: int, row: int) -> list[dict]:
    """Every copy of (source, part, row) in the mixture: shard, stream token range, and where it lands."""
    found = []
    for k in range(len(prov.shards)):
        table, offsets, names = prov.refs(k)
        if source not in names:
            continue
        s = names.index(source)
        hit = np.flatnonzero((table["source"] == s) & (table["part"] == part) & (table["row"] == row))
        for i in hit.tolist():
            a, b = int(offsets[i]), int(offsets[i + 1])
            found.append({"shard": prov.shards[k], "position": i, "stream": (a, b), "where": _where(prov, k, a, b)})
    return found


def _find_doc(cache: TokenCache, doc_id: str) -> tuple[int, int, dict] | None:
    """(part, row, row data) of ``doc_id`` in a cache: the part of the file named in the id first."""
    parts = list(range(len(cache.parts)))
    likely = [p for p in parts if doc_id.startswith((cache.parts[p]["file"] + ":", cache.parts[p]["file"] + "#"))]
    for p in likely + [p for p in parts if p not in likely]:
        table = cache.doc_table(p, columns=["doc_id", "subset", "n_tokens"])
        ids = np.asarray(table.column("doc_id").to_pylist(), dtype=object)
        hit = np.flatnonzero(ids == doc_id)
        if len(hit):
            r = int(hit[0])
            return p, r, table.slice(r, 1).to_pylist()[0]
    return None


def duplicate_of(out: str, source: str, part: int, row: int) -> dict | None:
    """The row of the mixture's removals (``layout.DEDUP_FILE``) for a removed document, or None (the
    row groups whose statistics cannot hold it are skipped)."""
    path = dedup_path(out)
    if not storage.exists(path):
        return None
    where = [("removed_source", "=", source), ("removed_part", "=", part), ("removed_row", "=", row)]
    if storage.is_remote(path):
        with storage.open_read(path) as f:
            table = pq.read_table(pa.BufferReader(f.read()), filters=where)
    else:  # only the row groups whose statistics may hold it are read
        table = pq.read_table(path, filters=where)
    return table.slice(0, 1).to_pylist()[0] if table.num_rows else None


def inspect_doc(out: str, query: str, cache_root: str) -> str:
    """Where every copy of ``SOURCE:DOC_ID`` landed, as text."""
    if ":" not in query:
        raise MixprepError(f"--doc {query!r}: expected SOURCE:DOC_ID, e.g. pile:train/00.jsonl.zst:17 (the doc_id as "
                           "`inspect --sample` shows it).")
    source, doc_id = query.split(":", 1)
    prov = Provenance(out)
    caches = _Caches(prov.manifest, cache_root)
    try:
        found = _find_doc(caches(source), doc_id)
        if found is None:
            raise MixprepError(f"document {doc_id!r} is not in the token cache of {source!r} "
                               f"({caches(source).directory}): check the id (as `inspect --sample` prints it); "
                               "rejected and excluded documents are not cached.")
        part, row, d = found
        copies = doc_copies(prov, source, part, row)
        head = (f"{source}:{doc_id}: {d['n_tokens']:,} tokens, subset {d['subset'] or '-'} (cache part {part}, row "
                f"{row}); {len(copies)} cop{'y' if len(copies) == 1 else 'ies'} in {prov.manifest['name']}")
        if not copies:
            dup = duplicate_of(out, source, part, row)
            if dup is not None:
                kind = f"an {dup['kind']}" if dup["kind"] == "exact" else f"a {dup['kind']}"
                kept = caches.doc_row(dup["kept_source"], dup["kept_part"], dup["kept_row"])["doc_id"]
                return (head + f" (dropped as {kind} duplicate of {dup['kept_source']}:{kept}, "
                        f"cache part {dup['kept_part']}, row {dup['kept_row']}: dedup kept that copy)")
            return head + " (the selection did not take it)"
        lines = [head + ":"]
        for c, copy in enumerate(copies, 1):
            a, b = copy["stream"]
            lines.append(f"  copy {c}: shard {copy['shard']} stream tokens [{a:,}, {b:,}): {copy['where']}")
        return "\n".join(lines)
    finally:
        caches.close()
