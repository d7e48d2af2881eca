"""mixprep: token-exact pretraining data mixtures, as Apache Beam pipelines.

The data's path, one module a step (``mixture.run_mixture`` ties them together, ``cli`` is the
``mixprep`` command):

  config     mixtures/*.yaml -> frozen, checked dataclasses
  sources/   read corpora in their published layouts     -> Document records (+ rejects)
  tokenizer  load a HF tokenizer once, encode in batches  -> token arrays, EOS appended
  cache      tokenize once per source and input file      -> MMIDIDX parts + document tables
  plan       token targets per (source, length bucket)    -> checked against max_repetition
  select     which documents, how many copies (hashing)   -> exact token totals
  pack       shuffle and pack                             -> NAME-NNNNN-of-MMMMM.{bin,idx}
  manifest   what the mixture holds                       -> manifest.json, GPT-NeoX snippet
  mmidx      the Megatron / GPT-NeoX on-disk format
  dataset    the trainer-side reader
  verify, report, inspect, stats, progress: what users run and see around a mixture
  storage    every file operation: local paths or any Beam filesystem (gs://, s3://)
"""

__version__ = "0.1.0"
