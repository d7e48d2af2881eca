"""mixprep: token-exact pretraining data mixtures, as Apache Beam pipelines.

The data's path, one module a step:

  sources/   read corpora in their published layouts     -> Document records (+ rejects)
  tokenizer  load a HF tokenizer once, encode in batches  -> token arrays, EOS appended
  cache      tokenize once per source                     -> MMIDIDX shards + document table
  plan       token targets per (source, length bucket)    -> keep / repeat rates
  mix        select, shuffle and pack exactly             -> STAGE-NNNNN-of-MMMMM.{bin,idx}
  mmidx      the Megatron / GPT-NeoX on-disk format
  dataset    the trainer-side reader
"""

__version__ = "0.1.0"
