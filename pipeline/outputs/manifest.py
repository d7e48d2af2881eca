"""What a mixture holds, said once: ``manifest.json``, a GPT-NeoX config snippet, a summary table.

Shares are shares of tokens; each kind of share has its own total, so each kind sums to 1:

- requested: the plan's target tokens over ``total_tokens`` (the config's ask);
- achieved (selected): the tokens of every selected document copy, repeats counted, over all
  selected tokens. The shards' token streams hold exactly these, tails included: a source's or a
  bucket's achieved tokens are the sum of ``n`` over its copies in ``_provenance/*.refs.npy``;
- written: the tokens the shards' entries (the samples) hold, over all written tokens. Each shard's
  tail (its last fewer than ``seq_len + 1`` tokens, never written) is charged to its stream's last
  copies, so a source's ``written_tokens + tail_tokens`` is its achieved tokens. Written figures are
  given per source and per category (a bucket's are its achieved ones: tails are a few thousand
  tokens per shard).

Per source, ``subsets`` splits the selection by the documents' subset (Pile sets, RedPajama
subsets, StarCoder languages: the document tables' ``subset`` column): distinct documents, copies,
tokens and the share of the source's achieved tokens. Every number is computed from the plan, the
caches' document tables and the shards' own records; ``tests/outputs/test_manifest.py`` recomputes every
share from the shards and their provenance alone.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Sequence

from .. import __version__, storage
from ..bundled import tokenizer_warnings
from ..cache import TokenCache
from ..config import MixtureConfig, config_hash
from ..layout import SPLIT_FOLDERS, TOKENIZER_FILE, split_folder, split_mixture
from ..mix.plan import SourcePlan
from ..mix.select import BucketSelection
from ..tokenizer import TokenizerInfo

__all__ = ["build_manifest", "split_manifest", "held_out_section", "neox_config", "summary_table", "MANIFEST_VERSION"]

MANIFEST_VERSION = 2  # 2: written_share over the written total (1 subtracted the tails twice); subsets; held_out
# What the trainer files say about evaluation without held-out splits (worded before validation_tokens /
# test_tokens existed: a mixture without them keeps its bytes).
NO_HELD_OUT = ("no held-out split: every shard is training data. GPT-NeoX takes train, valid and test paths all or "
               "none, so gpt-neox-data.json repeats the training shards as valid and test paths with eval-iters 0: "
               "nothing is evaluated on them. Give real valid/test paths and eval-iters once held-out mixtures exist.")
HELD_OUT = ("held-out splits: whole documents that no training copy uses, at most one copy each, drawn by their own "
            "hash keys (valid first, test from what it left) before training was planned; the training weights, "
            "natural length proportions. Each split is a mixture folder of its own (SPLIT/manifest.json). documents: "
            "distinct documents per source and split (in_two_splits: documents with a training copy that a held-out "
            "split also holds, 0); ids_sha256: sha256 of the split's sorted 64-bit document hashes.")


def _share(x: int, total: int) -> float:
    return round(x / total, 9) if total else 0.0


def build_manifest(
    cfg: MixtureConfig,
    tokenizer: TokenizerInfo,
    plans: Sequence[SourcePlan],
    selections: dict[str, Sequence[BucketSelection]],
    caches: dict[str, TokenCache],
    shards: Sequence[dict],
    plan_hash: str,
    tokenized: dict[str, dict] | None = None,
    subsets: dict[str, dict[str, dict]] | None = None,
    dedup: dict | None = None,
) -> dict:
    """The manifest.

    Args:
      tokenized: per source, {"sample_rule", "tokens"}: what tokenizing it took.
      subsets: per source, ``select.selected_by_subset``'s {subset: {documents, copies, tokens}}.
      dedup: ``mix.dedup.Dedup.summary()`` when duplicates were removed before planning (the section
        ``dedup`` of the manifest: absent without it, so such a manifest keeps its bytes).
    """
    tokenized, subsets = tokenized or {}, subsets or {}
    selected_total = sum(s.selected_tokens for sel in selections.values() for s in sel)
    written_total = sum(sh["tokens"] for sh in shards)
    written = collections.Counter()
    tails = collections.Counter()
    for sh in shards:
        for name, v in sh["sources"].items():
            written[name] += v["tokens"] - v["tail_tokens"]
            tails[name] += v["tail_tokens"]
    sources = {}
    for p in plans:
        sel = selections[p.source]
        cache = caches[p.source]
        buckets = []
        for b, s in zip(p.buckets, sel):
            buckets.append({
                "bucket": b.label,
                "available_tokens": b.available_tokens,
                "available_documents": b.available_docs,
                "requested_tokens": b.target_tokens,
                "requested_share": _share(b.target_tokens, cfg.total_tokens),
                "achieved_tokens": s.selected_tokens,
                "achieved_share": _share(s.selected_tokens, selected_total),
                "copies": s.selected_copies,
                "documents": b.available_docs if s.full_copies else s.selected_copies,
                "epochs": round(s.selected_tokens / b.available_tokens, 6) if b.available_tokens else 0.0,
                "full_copies": s.full_copies,
            })
        achieved = sum(s.selected_tokens for s in sel)
        selected_docs = sum(b["documents"] for b in buckets)
        # Every document read is accounted for: read = selected + dropped by sampling + rejected + excluded;
        # and every file the source's patterns match: files_matched = files_read + len(files_refused).
        accounting = {**cache.manifest["accounting"], "selected_documents": selected_docs,
                      "dropped_by_sampling": cache.manifest["accounting"]["forwarded"] - selected_docs}
        sources[p.source] = {
            "category": p.category,
            "weight": p.weight,
            "cache_fingerprint": cache.manifest["fingerprint"],
            # Which encoder backends built the cache's parts ({backend: {parts, version}}; same ids).
            "encoders": cache.manifest.get("encoders") or {"unrecorded": {"parts": len(cache.parts)}},
            "accounting": accounting,
            "available_tokens": p.available_tokens,
            "available_documents": sum(b.available_docs for b in p.buckets),
            "requested_tokens": p.target_tokens,
            "requested_share": _share(p.target_tokens, cfg.total_tokens),
            "achieved_tokens": achieved,
            "achieved_share": _share(achieved, selected_total),
            "written_tokens": written[p.source],
            "written_share": _share(written[p.source], written_total),
            "tail_tokens": tails[p.source],
            "copies": sum(b["copies"] for b in buckets),
            "documents": selected_docs,
            "epochs": round(achieved / p.available_tokens, 6) if p.available_tokens else 0.0,
            "buckets": buckets,
            "subsets": {name: {**v, "share_of_source": _share(v["tokens"], achieved)}
                        for name, v in subsets.get(p.source, {}).items()},
        }
        t = tokenized.get(p.source)
        if t is not None:
            # A sampled source's available figures are estimates: its candidates over the rates.
            sources[p.source]["tokenized"] = {
                "sampled": t["sample_rule"] is not None,
                "sample_rule": t["sample_rule"],
                "tokens": t["tokens"],
                "tokens_per_token_taken": round(t["tokens"] / achieved, 6) if achieved else 0.0,
            }
    categories = collections.defaultdict(lambda: dict.fromkeys(("requested_tokens", "achieved_tokens",
                                                                 "written_tokens", "tail_tokens"), 0))
    for name, s in sources.items():
        c = categories[s["category"]]
        for k in c:
            c[k] += s[k]
    for c in categories.values():
        c["requested_share"] = _share(c["requested_tokens"], cfg.total_tokens)
        c["achieved_share"] = _share(c["achieved_tokens"], selected_total)
        c["written_share"] = _share(c["written_tokens"], written_total)
    tail_total = sum(sh["tail_tokens"] for sh in shards)
    extra = {"dedup": dedup_section(dedup)} if dedup is not None else {}
    return {
        "manifest_version": MANIFEST_VERSION,
        "mixprep_version": __version__,
        "name": cfg.name,
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "plan_hash": plan_hash,
        "tokenizer": {**tokenizer.info(), "name": cfg.tokenizer,  # as written: no machine's paths
                      "named_by_mixture": cfg.named_tokenizer or cfg.tokenizer,
                      "warnings": tokenizer_warnings(cfg.named_tokenizer, cfg.tokenizer, tokenizer.sha256,
                                                     cfg.total_tokens)},
        "seq_len": cfg.seq_len,
        "layout": cfg.layout,  # samples: one entry, one sample; documents: one entry, one document copy
        "sample_tokens": cfg.seq_len + 1,
        "seed": cfg.seed,
        "dtype": tokenizer.dtype.name,
        "length_bounds": list(cfg.bucket_bounds),
        "totals": {
            "requested_tokens": cfg.total_tokens,
            "selected_tokens": selected_total,
            "written_tokens": written_total,
            "tail_tokens": tail_total,
            "samples": sum(sh["sequences"] for sh in shards),
        },
        "sources": sources,
        "categories": dict(sorted(categories.items())),
        "held_out": {"valid": None, "test": None, "note": NO_HELD_OUT},
        "shards": [
            {"prefix": sh["name"], **{k: sh[k] for k in ("sequences", "tokens", "tail_tokens", "bin_sha256",
                                                          "idx_sha256", "bin_bytes", "idx_bytes")}}
            for sh in shards
        ],
        **extra,
    }


DEDUP_NOTE = ("duplicates removed across sources before planning: documents grouped by content key "
              "(normalization as named) and, with near, joined by verified MinHash pairs into clusters (connected "
              "components); one kept per cluster by the priority list, then the stable doc hash. Per "
              "source, before/after count its candidates (a sampled source's: what was tokenized of it); "
              "share_before/share_after are its share of all candidates' tokens; the plan's available figures and "
              "shares are over what remains. pairs: per (source of the copy kept, source of the copy removed).")


def dedup_section(summary: dict) -> dict:
    """The manifest's ``dedup``: the resolution's summary, each source's share of the candidates' tokens
    before and after, and a note on how to read it."""
    sources = summary["sources"]
    before = sum(s["tokens_before"] for s in sources.values())
    after = sum(s["tokens_after"] for s in sources.values())
    for s in sources.values():
        s["share_before"], s["share_after"] = _share(s["tokens_before"], before), _share(s["tokens_after"], after)
    return {**summary, "note": DEDUP_NOTE}


def split_manifest(cfg: MixtureConfig, tokenizer: TokenizerInfo, split: str, plans: Sequence[SourcePlan],
                   selections: dict[str, Sequence[BucketSelection]], caches: dict[str, TokenCache],
                   shards: Sequence[dict], plan_hash: str, subsets: dict[str, dict[str, dict]]) -> dict:
    """A held-out split's own manifest (``out/SPLIT/manifest.json``): a mixture manifest of its shards,
    so the readers take the split's folder as a mixture folder. ``config`` is the whole mixture's; the
    split's ask is ``totals.requested_tokens``; bucket ``available`` figures are what earlier splits left."""
    tokens = cfg.held_out_tokens[split]
    as_mixture = dataclasses.replace(cfg, name=split_mixture(cfg.name, split), total_tokens=tokens,
                                     shards=cfg.split_shards(tokens))
    m = build_manifest(as_mixture, tokenizer, plans, selections, caches, shards, plan_hash, None, subsets)
    for s in m["sources"].values():
        del s["accounting"]  # the mixture manifest's, about every document read
    del m["held_out"]
    return {**m, "config": cfg.to_dict(), "config_hash": config_hash(cfg),
            "split": {"name": split, "of": cfg.name, "rule": HELD_OUT}}


def held_out_section(manifests: dict[str, dict], documents: dict[str, dict]) -> dict:
    """The mixture manifest's ``held_out``: per split its folder, totals, shards and per-source figures;
    per source the distinct documents of every split (``held_out.documents_per_split``)."""
    out = {}
    for split in SPLIT_FOLDERS:
        m = manifests.get(split)
        out[split] = None if m is None else {
            "folder": split_folder(split),
            "name": m["name"],
            "plan_hash": m["plan_hash"],
            "totals": m["totals"],
            "shards": [{k: s[k] for k in ("prefix", "sequences", "tokens", "bin_sha256", "idx_sha256")}
                       for s in m["shards"]],
            "sources": {name: {"requested_tokens": s["requested_tokens"], "achieved_tokens": s["achieved_tokens"],
                               "achieved_share": s["achieved_share"], "written_tokens": s["written_tokens"],
                               "documents": s["documents"], "ids_sha256": documents[name]["ids_sha256"][split]}
                        for name, s in m["sources"].items()},
        }
    out["documents"] = {name: {k: v for k, v in d.items() if k != "ids_sha256"} for name, d in documents.items()}
    out["note"] = HELD_OUT
    return out


def neox_config(manifest: dict, out: str) -> dict:
    """GPT-NeoX's data settings for the mixture as written (``gpt-neox-data.json``), merged into a
    GPT-NeoX config: they pass GPT-NeoX's own checks (``tests/outputs/test_manifest.py`` transcribes them).

    - Every entry is one sample of seq_len + 1 tokens, so ``pack-impl: unpacked`` reads them as they
      are (GPT-NeoX since PR #1240, August 2024; older versions refuse the key: docs/GPT-NEOX.md says
      what to do there). The shards are already mixed: their weights are their sample counts.
    - Valid and test name the held-out splits' shards (the manifest's ``held_out``); with one split
      only, both name it. GPT-NeoX asserts that train, valid and test paths are given all or none,
      and with none it reads a single ``data-path`` prefix cut by ``split``, which cannot name several
      shards. So without held-out splits valid and test repeat the training shards, and
      ``eval-iters: 0`` keeps GPT-NeoX from evaluating on them (it evaluates only when eval_iters > 0);
      with them ``eval-iters`` is left to the user's config.
    - ``vocab-file`` is the run's tokenizer.json, copied beside the shards (``TOKENIZER_FILE``).

    Paths are absolute for a local ``out``; for an object store they are its URIs, which GPT-NeoX (it
    reads local files) cannot open: copy the folder to the trainer and replace the URI prefix.
    """
    def where(name: str) -> str:
        return storage.join(out if storage.is_remote(out) else os.path.abspath(out), name)

    documents = manifest.get("layout") == "documents"  # entries are documents: GPT-NeoX packs them

    def blend(shards: list[dict], folder: str = "") -> tuple[list[str], list[int]]:
        return ([where(storage.join(folder, s["prefix"]) if folder else s["prefix"]) for s in shards],
                [s["tokens"] if documents else s["sequences"] for s in shards])

    train = blend(manifest["shards"])
    held = {k: v for k, v in (manifest.get("held_out") or {}).items() if k in SPLIT_FOLDERS and v}
    evals = {k: blend(v["shards"], v["folder"]) for k, v in held.items()}
    valid = evals.get("valid") or evals.get("test") or train
    test = evals.get("test") or valid
    return {
        "train-data-paths": train[0],
        "train-data-weights": train[1],
        "valid-data-paths": valid[0],
        "valid-data-weights": valid[1],
        "test-data-paths": test[0],
        "test-data-weights": test[1],
        **({} if evals else {"eval-iters": 0}),
        "seq-length": manifest["seq_len"],
        "data-impl": "mmap",
        "pack-impl": "packed" if documents else "unpacked",
        "tokenizer-type": "HFTokenizer",
        "vocab-file": where(TOKENIZER_FILE),
    }


def summary_table(manifest: dict) -> str:
    rows = [("source", "category", "requested", "achieved", "written", "tokens", "epochs")]
    for name, s in manifest["sources"].items():
        rows.append((name, s["category"], f"{100 * s['requested_share']:.3f}%", f"{100 * s['achieved_share']:.3f}%",
                     f"{100 * s['written_share']:.3f}%", f"{s['achieved_tokens']:,}", f"{s['epochs']:.3f}"))
    t = manifest["totals"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    entries = (f"{t['samples']:,} documents (layout: documents)" if manifest.get("layout") == "documents"
               else f"{t['samples']:,} samples of {manifest['sample_tokens']} tokens")
    lines.append(
        f"{manifest['name']}: {entries} in "
        f"{len(manifest['shards'])} shards; {t['selected_tokens']:,} tokens selected, "
        f"{t['tail_tokens']:,} left in shard tails"
    )
    return "\n".join(lines)
