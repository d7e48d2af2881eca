"""What a mixture holds, said once: ``manifest.json``, a GPT-NeoX config snippet, a summary table.

Shares are shares of tokens. Per source and per length bucket the manifest gives the available
tokens, what was requested (tokens and share), what was selected (tokens, share, copies, epochs)
and what the shards hold after each shard's unused tail. Every number is computed from the plan and
the shards' own records, so the manifest agrees with the shards.
"""

from __future__ import annotations

import collections
import os
from typing import Sequence

from . import __version__, storage
from .cache import TokenCache
from .config import MixtureConfig, config_hash
from .plan import SourcePlan
from .select import BucketSelection
from .tokenizer import TokenizerInfo

__all__ = ["build_manifest", "neox_config", "summary_table", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


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
) -> dict:
    """The manifest; ``tokenized[source]`` = {"sample_rule", "tokens"}: what tokenizing it took."""
    tokenized = tokenized or {}
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
            "accounting": accounting,
            "available_tokens": p.available_tokens,
            "available_documents": sum(b.available_docs for b in p.buckets),
            "requested_tokens": p.target_tokens,
            "requested_share": _share(p.target_tokens, cfg.total_tokens),
            "achieved_tokens": achieved,
            "achieved_share": _share(achieved, selected_total),
            "written_tokens": written[p.source],
            "written_share": _share(written[p.source], written_total - sum(tails.values())),
            "tail_tokens": tails[p.source],
            "copies": sum(b["copies"] for b in buckets),
            "documents": selected_docs,
            "epochs": round(achieved / p.available_tokens, 6) if p.available_tokens else 0.0,
            "buckets": buckets,
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
    categories = collections.defaultdict(lambda: {"requested_tokens": 0, "achieved_tokens": 0, "written_tokens": 0})
    for name, s in sources.items():
        c = categories[s["category"]]
        c["requested_tokens"] += s["requested_tokens"]
        c["achieved_tokens"] += s["achieved_tokens"]
        c["written_tokens"] += s["written_tokens"]
    for c in categories.values():
        c["requested_share"] = _share(c["requested_tokens"], cfg.total_tokens)
        c["achieved_share"] = _share(c["achieved_tokens"], selected_total)
    tail_total = sum(sh["tail_tokens"] for sh in shards)
    return {
        "manifest_version": MANIFEST_VERSION,
        "mixprep_version": __version__,
        "name": cfg.name,
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "plan_hash": plan_hash,
        "tokenizer": {**tokenizer.info(), "name": cfg.tokenizer},  # as written: no machine's paths
        "seq_len": cfg.seq_len,
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
        "shards": [
            {"prefix": sh["name"], **{k: sh[k] for k in ("sequences", "tokens", "tail_tokens", "bin_sha256",
                                                          "idx_sha256", "bin_bytes", "idx_bytes")}}
            for sh in shards
        ],
    }


def neox_config(manifest: dict, out: str) -> dict:
    """GPT-NeoX data settings that train on the mixture as written.

    Each entry is one sample of seq_len + 1 tokens, so ``pack_impl: unpacked`` reads them as they are;
    the shards are already mixed, so their weights are their sample counts.
    """
    return {
        "train-data-paths": [storage.join(out if storage.is_remote(out) else os.path.abspath(out), s["prefix"])
                             for s in manifest["shards"]],
        "train-data-weights": [s["sequences"] for s in manifest["shards"]],
        "seq-length": manifest["seq_len"],
        "data-impl": "mmap",
        "pack-impl": "unpacked",
        "tokenizer-type": "HFTokenizer",
        "vocab-file": manifest["tokenizer"]["name"],
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
    lines.append(
        f"{manifest['name']}: {t['samples']:,} samples of {manifest['sample_tokens']} tokens in "
        f"{len(manifest['shards'])} shards; {t['selected_tokens']:,} tokens selected, "
        f"{t['tail_tokens']:,} left in shard tails"
    )
    return "\n".join(lines)
