"""mixprep: token-exact pretraining data mixtures, as Apache Beam pipelines.

The data's path (``mixture.run_mixture`` reads it top to bottom; ``cli`` is the ``mixprep`` command):

  config      mixtures/*.yaml -> frozen, checked dataclasses
  run         Run: config, tokenizer, paths, Beam arguments, progress, every source's files
  sampling/   which sources only a sample of is tokenized (estimate, rule), topped up (driver, topup)
  sources/    read corpora in their published layouts      -> Document records (+ rejects)
  tokenizer/  load a tokenizer.json; Encoder: batches, safe cuts, the fastest exact backend
  cache/      tokenize once per source and input file       -> MMIDIDX parts + document tables
  mix/        the plan (planning): token targets, held-out splits, which documents and copies
  pack        route copies to shards and write them        -> NAME-NNNNN-of-MMMMM.{bin,idx}
  outputs/    after packing: manifest.json, trainer files, report; verify
  dataset     the trainer-side reader
  layout      every file and folder name a run reads or writes; mmidx the .bin/.idx format
  storage     every file operation: local paths or any Beam filesystem (gs://, s3://)
  dedup/      exact and near-duplicate detection (docs/DEDUP.md), not yet part of a run
"""

__version__ = "0.1.0"
