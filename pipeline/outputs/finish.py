"""After packing: every shard checked, the held-out splits' manifests, the trainer files, the mixture's
manifest (last: its presence means the folder is complete), the report.
"""

from __future__ import annotations

from .. import storage
from ..crashpoints import crash_point
from ..layout import NEOX_FILE, TOKENIZER_FILE, dedup_dir, dedup_path, manifest_path, split_dir, written_shards
from ..mix.held_out import documents_per_split, split_plans
from ..mix.planning import Planned, available
from ..mix.select import rule_tokens, selected_by_subset
from ..run import Run
from ..storage import atomic_writer, remove_temporaries, write_json
from .manifest import build_manifest, held_out_section, neox_config, split_manifest, summary_table
from .megatron import write_megatron_args
from .report import write_report

__all__ = ["finish"]


def finish(run: Run, planned: Planned, plotter=None) -> dict:
    """Write the manifests and the files beside the shards; returns the mixture's manifest.

    ``plotter``: draws the report's plots (``report.make_plots``); None: drawn here."""
    cfg, out, tokenizer = run.cfg, run.out, run.tokenizer
    caches, rules, packing = planned.caches, planned.rules, planned.packing
    remove_temporaries(out)  # a killed pack writer's: every pipeline has ended
    if planned.dedup is not None:  # what inspect --doc reads to say "duplicate of"
        planned.dedup.write(dedup_path(out), caches)
    names = list(packing.sources)
    tokenized = {name: {"sample_rule": rules[name].to_dict() if rules[name] else None,
                        "tokens": rule_tokens(c, rules[name]) if rules[name] else c.stats["tokens"]}
                 for name, c in caches.items()}
    shards = written_shards(out, cfg.name, cfg.num_shards, packing.plan_hash)
    subsets = {n: selected_by_subset(caches[n], n, cfg.bucket_bounds, cfg.seed, planned.selections[n],
                                     packing.rules[i]) for i, n in enumerate(names)}
    manifest = build_manifest(cfg, tokenizer, planned.plans, planned.selections, {n: caches[n] for n in names}, shards,
                              packing.plan_hash, tokenized, subsets,
                              planned.dedup.summary() if planned.dedup is not None else None)
    if planned.splits:
        manifest["held_out"] = _finish_splits(run, planned)
    with atomic_writer(storage.join(out, TOKENIZER_FILE), "wb") as f:  # gpt-neox-data.json's vocab-file
        f.write(tokenizer.json_bytes)
    write_json(storage.join(out, NEOX_FILE), neox_config(manifest, out))
    write_megatron_args(manifest, out, cfg.tokenizer_path)
    storage.delete_tree(dedup_dir(out))  # the dedup resolutions' working files (a crashed run's too): read above
    crash_point(f"before-manifest:{cfg.name}")
    write_json(manifest_path(out), manifest)  # last: its presence means complete
    write_report(out, manifest, run.cache_root, plotter)  # report.md + plots, from the manifest and the caches
    print(summary_table(manifest))
    return manifest


def _finish_splits(run: Run, planned: Planned) -> dict:
    """Each held-out split's manifest (in its folder), and the mixture manifest's ``held_out`` section."""
    cfg, caches = run.cfg, planned.caches
    manifests = {}
    for split, packing in planned.splits.items():
        folder = split_dir(run.out, split)
        shards = written_shards(folder, packing.mixture, packing.num_shards, packing.plan_hash)
        selections = {n: list(planned.held_out[split][n]) for n in packing.sources}
        subsets = {n: selected_by_subset(caches[n], n, cfg.bucket_bounds, cfg.seed, packing.selections[i],
                                         packing.rules[i]) for i, n in enumerate(packing.sources)}
        plans = split_plans(cfg, planned.held_out, planned.candidates, available(planned.rules, planned.candidates),
                            split)
        manifests[split] = split_manifest(cfg, run.tokenizer, split, plans, selections, caches, shards,
                                          packing.plan_hash, subsets)
        write_json(manifest_path(folder), manifests[split])
    documents = {n: documents_per_split(caches[n], n, planned.packing, planned.held_out)
                 for n in planned.packing.sources}
    return held_out_section(manifests, documents)

