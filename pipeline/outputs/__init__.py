"""What a run leaves beside its shards, and the checks on it.

- `finish`: after packing: shards checked, split manifests, trainer files, the manifest, the report;
- `manifest`: ``manifest.json`` (shares requested, selected, written), the GPT-NeoX config snippet;
- `megatron`: Megatron-LM's ``--data-path`` arguments; `megatron_check`: megatron-core's own datasets
  over our shards, to prove the fit;
- `report`: ``report.md`` and its plots; `verify`: ``mixprep verify`` of a mixture or a cache.

The trainer-side reader is ``pipeline.dataset`` (``MixtureDataset``), which needs none of these.
"""
