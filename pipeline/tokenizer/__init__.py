"""Load a Hugging Face `tokenizer.json` and turn documents into token ids, EOS appended.

One job per module; docs/TOKENIZER.md has the arguments the cuts and the fast path rely on:

- `load`: reading tokenizer.json (path, folder, hub id) into a picklable `LoadedTokenizer`
  (`TokenizerInfo` without the file), its token dtype from `mmidx.dtype_for_vocab`;
- `structure`: the structure checks shared by the two proofs (byte-level BPE, GPT-2 regex);
- `cuts`: where a long text may be cut without changing its ids, and `chunking_blocker`;
- `fast`: the tiktoken encoding built from the same file, and its gate `fast_encoder_blocker`;
- `giga`: gigatoken's tokenizer loaded from the same file, and its gate (`gigatoken_blocker`, probes);
- `encoder`: the `Encoder` (one per worker; `backend`: gigatoken, tiktoken or tokenizers, the first a
  gate admits, or MIXPREP_ENCODER's) and batching by size.

Usage::

    tok = load_tokenizer("tokenizer/tokenizer.json")      # or a hub id, e.g. EleutherAI/gpt-neox-20b
    encoder = Encoder(tok)                                 # once per worker, in DoFn.setup()
    for batch in batches_by_bytes(docs, text_of=lambda d: d.text):
        ids = encoder.encode_batch([d.text for d in batch])  # np.ndarray of tok.dtype each, EOS last
"""

from .cuts import DEFAULT_CHUNK_CHARS, chunking_blocker, is_safe_cut, safe_cut_points, split_at_safe_cuts
from .encoder import DEFAULT_BATCH_BYTES, ENCODER_VERSION, Encoder, batches_by_bytes, batches_by_size, utf8_len
from .fast import fast_encoder_blocker
from .giga import gigatoken_blocker
from .load import EOS_TOKEN, LoadedTokenizer, TokenizerInfo, load_tokenizer
from .structure import GPT2_PATTERN

__all__ = [
    "EOS_TOKEN",
    "ENCODER_VERSION",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_CHUNK_CHARS",
    "LoadedTokenizer",
    "TokenizerInfo",
    "Encoder",
    "load_tokenizer",
    "batches_by_size",
    "batches_by_bytes",
    "utf8_len",
    "is_safe_cut",
    "safe_cut_points",
    "split_at_safe_cuts",
    "chunking_blocker",
    "fast_encoder_blocker",
    "gigatoken_blocker",
    "GPT2_PATTERN",
]
