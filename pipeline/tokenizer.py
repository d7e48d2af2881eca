r"""Load a Hugging Face `tokenizer.json` and turn documents into token ids, EOS appended.

At pipeline construction, `load_tokenizer` reads the file once and returns a small picklable
`LoadedTokenizer` (the JSON bytes and their sha256, vocabulary size, EOS id, token dtype). Each worker
builds one `Encoder` from it in `DoFn.setup()` and feeds it batches bounded in bytes::

    tok = load_tokenizer("tokenizer/tokenizer.json")      # or a hub id, e.g. EleutherAI/gpt-neox-20b
    encoder = Encoder(tok)                                 # once per worker
    for batch in batches_by_bytes(docs, text_of=lambda d: d.text):
        for doc, ids in zip(batch, encoder.encode_batch([d.text for d in batch])):
            ...                                            # ids: np.ndarray of tok.dtype, ids[-1] == tok.eos_id

Long documents. HF `tokenizers` slows down per character as a text grows (measured: 0.8 us/char at
100k characters, 1.6 us/char at 16M) and keeps offsets for every byte of it. The `Encoder` therefore
cuts a long text into pieces of about `chunk_chars` characters and encodes the pieces in one batch
call, concatenating their ids. The result is exactly the ids of encoding the whole text at once,
provided every cut `i` satisfies `is_safe_cut` and the tokenizer passes `chunking_blocker`.

The rule: cut right before an ASCII space that follows a non-whitespace character, `"...X| ..."`
(X = text[i-1] is not whitespace, text[i] == " "). Why the ids cannot change, stage by stage:

- Added tokens are found first in the raw text, then in the normalized text, by a leftmost-longest
  matcher that restarts after each match. If no match straddles the cut, the matches left of it are
  the same in the left piece and the matches right of it the same in the right piece (a match may
  end or start at the cut). A straddling match would contain "X " (non-whitespace, then a space):
  `chunking_blocker` rejects added tokens containing such a pair, and tokens with lstrip, rstrip or
  single_word, which look past their match. `<|endoftext|>` and GPT-NeoX's 2-24-space tokens pass.
- Normalizer (none or NFC): U+0020 has canonical combining class 0 and is never the second part of a
  canonical composition, so NFC(a + b) == NFC(a) + NFC(b) when b starts with a space; and NFC never
  turns a non-whitespace character into whitespace. The cut never separates a base character from a
  following combining mark (the space is not one).
- Pre-tokenizer (ByteLevel, use_regex=True, the GPT-2 regex
  `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`): a space can only
  *start* a match (` ?...`) or be part of an all-whitespace match, so no match holds X and the space;
  the match holding X ends at the cut and the next match starts there. Nothing looks behind, and the
  look-ahead `(?!\S)` belongs to whitespace runs, which cannot end at X; so matching on each side of
  the cut sees what it sees in the whole text. In particular a run of spaces after X stays whole, and
  `\s+(?!\S)` still hands its last space to the next word, inside the right piece.
- BPE merges only within a pre-token, so the ids of the pieces concatenate to the ids of the whole.

"Whitespace" here is `str.isspace()` (plus U+180E, U+200B, U+FEFF, which older Unicode versions
called spaces), a superset of the regex engine's `\s` (Unicode White_Space; checked in the tests
for every code point). For any other pipeline (other normalizers or pre-tokenizers, a prefix space,
other post-processors, ...) the Encoder encodes every text whole and logs why. Where no safe cut
follows a piece's target length (e.g. a long run of CJK text without ASCII spaces), the piece grows
to the next safe cut, and to the end of the text if there is none: slower, never wrong.

The fast encoder. When `tiktoken` is installed (`pip install 'mixprep[fast]'`) and the tokenizer is
byte-level BPE that tiktoken can express exactly (`fast_encoder_blocker`), the `Encoder` encodes with
a `tiktoken.Encoding` built from the same tokenizer.json (~3-6x faster, same ids), else with
`tokenizers`, logging why. `Encoder.backend` says which. Why the ids are the same:

- BPE. tiktoken merges, inside a pre-token, the adjacent pair whose concatenation has the lowest
  rank among *all* vocabulary strings; `tokenizers` merges the pair with the lowest rank among its
  *merge rules*. With rank = the merge rule's position (or the token id, when ids grow in merge order)
  the two agree at every step if every adjacent pair that `tokenizers` can ever produce and whose
  concatenation is a token is a merge rule. That holds when each merge result is produced by one rule
  only and `tokenizers` encodes every merge result, alone, as that single token ("self-consistent";
  checked for the whole vocabulary when the encoder is built): if HF ever held adjacent tokens x, y
  with xy a token, the merges inside xy's span were those of encoding xy alone (merges never cross
  a span nobody merged across), which passes through [x, y] and ends in [xy], so (x, y) is the rule.
  The same argument covers tiktoken's shortcut of returning a whole pre-token that is a token.
- Pre-tokens: the same GPT-2 regex, applied to the same (NFC-normalized, for an NFC normalizer:
  `unicodedata.normalize`, which the tests compare with the tokenizers NFC on every code point)
  text. Special tokens are never matched (`encode_special_tokens`). Non-special added tokens are
  matched by `tokenizers` in the text before pre-tokenization, leftmost-longest; tiktoken can only
  express that for GPT-NeoX-20B's kind, runs of 2..N spaces for every N' in 2..N: the regex gets an
  alternative ` {2,N}` and its whitespace alternatives stop before two spaces, which reproduces
  splitting at the runs first; each run's bytes rank as the added token's id.
- What is checked at run time: a built-in probe text when the encoder is built, and the first
  `verify_bytes` of the texts it encodes, against `tokenizers`; any difference switches the encoder
  to `tokenizers` for good and logs an error. The benchmark compares every id of its corpus.

Threads: tiktoken releases the GIL. The encoder uses `threads` threads (default: the environment
variable MIXPREP_ENCODE_THREADS, else 1, right for Beam's local runner, which runs one worker process
per core); a single-process user on an N-core box passes `threads=N`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .errors import ConfigError

__all__ = [
    "EOS_TOKEN",
    "UINT16_VOCAB_LIMIT",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_CHUNK_CHARS",
    "LoadedTokenizer",
    "TokenizerInfo",
    "Encoder",
    "load_tokenizer",
    "token_dtype",
    "batches_by_bytes",
    "utf8_len",
    "is_safe_cut",
    "safe_cut_points",
    "split_at_safe_cuts",
    "chunking_blocker",
    "fast_encoder_blocker",
    "GPT2_PATTERN",
]

# Bump when a change to `Encoder` could change the ids it produces: it is part of the cache fingerprint.
ENCODER_VERSION = 1

log = logging.getLogger(__name__)

T = TypeVar("T")

EOS_TOKEN = "<|endoftext|>"  # GPT-NeoX-20B id 0; appended after every document
# Megatron's cut-off: below it ids are stored as uint16, otherwise int32 (docs/FORMAT.md).
UINT16_VOCAB_LIMIT = 65500
# Batches are bounded in bytes: each Encoding (tokens, offsets) lives until its batch call returns.
DEFAULT_BATCH_BYTES = 1 << 20
DEFAULT_CHUNK_CHARS = 1 << 16
# How much of the first texts the fast encoder also encodes with `tokenizers` to compare (~0.1 s).
DEFAULT_VERIFY_BYTES = 1 << 18
THREADS_ENV = "MIXPREP_ENCODE_THREADS"
# MIXPREP_ENCODER=tokenizers turns the fast encoder off (for comparisons, or should a check ever fail).
BACKEND_ENV = "MIXPREP_ENCODER"
# The ByteLevel pre-tokenizer's regex (use_regex=True), as `tokenizers` writes it.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Characters treated as whitespace when checking a cut: str.isspace() (which covers Unicode
# White_Space, the regex engine's \s) plus characters some Unicode versions classed as spaces.
_EXTRA_SPACES = "\u180e\u200b\ufeff"
# The same rule as `is_safe_cut`, for scanning (Python's \s is str.isspace(); checked in the tests).
_SAFE_CUT_RE = re.compile(rf"(?<=[^\s{_EXTRA_SPACES}]) ")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def _is_space(ch: str) -> bool:
    return ch.isspace() or ch in _EXTRA_SPACES


def token_dtype(vocab_size: int) -> np.dtype:
    """The numpy dtype that holds every id of a vocabulary of `vocab_size` entries.

    >>> token_dtype(50277), token_dtype(65500)
    (dtype('uint16'), dtype('int32'))
    """
    return np.dtype(np.uint16) if vocab_size < UINT16_VOCAB_LIMIT else np.dtype(np.int32)


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8 bytes (O(1) for ASCII strings)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def batches_by_bytes(
    items: Iterable[T], text_of: Callable[[T], str], max_bytes: int = DEFAULT_BATCH_BYTES
) -> Iterator[list[T]]:
    """Group `items` in order into lists whose texts total at most `max_bytes` UTF-8 bytes.

    An item larger than `max_bytes` is yielded alone.

    >>> list(batches_by_bytes(["aa", "bb", "c", "dddddd", "e"], str, max_bytes=4))
    [['aa', 'bb'], ['c'], ['dddddd'], ['e']]
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    batch: list[T] = []
    size = 0
    for item in items:
        n = utf8_len(text_of(item))
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


# --- where a long text may be cut -------------------------------------------------------------


def is_safe_cut(text: str, i: int) -> bool:
    """True if `text[i]` is an ASCII space that follows a non-whitespace character.

    For tokenizers that pass `chunking_blocker`, encoding `text[:i]` and `text[i:]` separately then
    gives the ids of `text` (see the module docstring for why).

    >>> [i for i in range(9) if is_safe_cut("a b  c  d", i)]
    [1, 3, 6]
    """
    return 0 < i < len(text) and text[i] == " " and not _is_space(text[i - 1])


def safe_cut_points(text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[int]:
    """Cut positions that split `text` into pieces of at least `chunk_chars` characters (the last may be shorter).

    Each piece ends at the first safe cut at or after `chunk_chars` characters from its start; with no
    such cut, the rest of the text is one piece. One forward scan: linear in `len(text)`.

    >>> safe_cut_points("one two three four", chunk_chars=4)
    [7, 13]
    """
    if chunk_chars <= 0:
        raise ValueError(f"chunk_chars must be positive, got {chunk_chars}")
    cuts: list[int] = []
    pos = 0
    while len(text) - pos > chunk_chars:
        m = _SAFE_CUT_RE.search(text, pos + chunk_chars)
        if m is None:
            break
        pos = m.start()
        cuts.append(pos)
    return cuts


def split_at_safe_cuts(text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """`text` cut at `safe_cut_points`; the pieces join back to `text`."""
    bounds = [0, *safe_cut_points(text, chunk_chars), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _items(node: Mapping | None, key: str) -> list[Mapping]:
    """A normalizer/pre-tokenizer as a flat list of components (a `Sequence` unpacked)."""
    if node is None:
        return []
    if node.get("type") == "Sequence":
        return [c for child in node.get(key, []) for c in _items(child, key)]
    return [node]


def chunking_blocker(config: Mapping[str, Any]) -> str | None:
    """Why cutting long texts at `is_safe_cut` points is not proven for this tokenizer, or None if it is.

    `config` is the parsed tokenizer.json (best: `json.loads(tokenizer.to_str())`, which fills in
    defaults). Proven: BPE (no dropout), no normalizer or NFC only, one ByteLevel pre-tokenizer with
    use_regex and without add_prefix_space, no post-processor or ByteLevel's (which only trims
    offsets), and added tokens without lstrip/rstrip/single_word whose content (raw and NFC) has no
    non-whitespace character directly followed by a space.
    """
    model = config.get("model") or {}
    if model.get("type") != "BPE":
        return f"model is {model.get('type')!r}, not BPE"
    if model.get("dropout"):
        return "BPE dropout is set"
    for norm in _items(config.get("normalizer"), "normalizers"):
        if norm.get("type") != "NFC":
            return f"normalizer {norm.get('type')!r} (only NFC is proven)"
    pre = _items(config.get("pre_tokenizer"), "pretokenizers")
    if len(pre) != 1 or pre[0].get("type") != "ByteLevel":
        return f"pre-tokenizers {[p.get('type') for p in pre]} (only a single ByteLevel is proven)"
    if not pre[0].get("use_regex", True):
        return "ByteLevel pre-tokenizer has use_regex=false (the whole text would be one pre-token)"
    if pre[0].get("add_prefix_space", True):
        return "ByteLevel pre-tokenizer has add_prefix_space=true"
    post = config.get("post_processor")
    if post is not None and post.get("type") != "ByteLevel":
        return f"post-processor {post.get('type')!r} (only none or ByteLevel is proven)"
    for tok in config.get("added_tokens") or []:
        content = tok.get("content", "")
        for flag in ("lstrip", "rstrip", "single_word"):
            if tok.get(flag):
                return f"added token {content!r} has {flag}=true"
        for form in {content, unicodedata.normalize("NFC", content)}:
            if any(b == " " and not _is_space(a) for a, b in zip(form, form[1:])):
                return f"added token {content!r} contains a space after a non-whitespace character"
    return None


# --- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """What the steps that do not encode need to know about a tokenizer (no tokenizer.json).

    Attributes:
        name: what the user gave (path or hub id), for messages and manifests.
        sha256: hex digest of the tokenizer.json bytes; part of the token cache's fingerprint.
        vocab_size: `get_vocab_size(with_added_tokens=True)`.
        eos_id: id of `eos_token`, appended after every document.
        dtype: uint16 below a vocabulary of 65,500 (also counting the largest id), else int32.
    """

    name: str
    sha256: str
    vocab_size: int
    eos_id: int
    eos_token: str
    dtype: np.dtype

    def info(self) -> dict:
        """What a manifest records about the tokenizer."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "eos_token": self.eos_token,
            "dtype": self.dtype.name,
        }


@dataclass(frozen=True, eq=False)
class LoadedTokenizer(TokenizerInfo):
    """A tokenizer.json and what the pipeline needs to know about it. Pickles as the JSON bytes.

    A DoFn that does not encode holds `about()` instead: Beam pickles a DoFn several times on its
    way to a worker (bz2 at level 9, ~0.1 s per MB each time), which for GPT-NeoX's 2 MB file adds
    up to seconds of a run.
    """

    json_bytes: bytes = field(repr=False)

    def about(self) -> TokenizerInfo:
        """The same facts without the tokenizer.json."""
        return TokenizerInfo(**{f.name: getattr(self, f.name) for f in fields(TokenizerInfo)})

    @functools.cached_property
    def tokenizer(self):
        """The `tokenizers.Tokenizer`, parsed on first use in each process (never pickled).

        Special tokens written inside a text are encoded as text (`encode_special_tokens`): EOS ids
        appear only where mixprep appends them, at document ends.
        """
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.json_bytes.decode("utf-8"))
        tok.encode_special_tokens = True
        return tok

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("tokenizer", None)  # the cached Rust object
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def load_tokenizer(name_or_path: str, *, eos_token: str | None = None) -> LoadedTokenizer:
    """Load a tokenizer.json from a local path (file, or a directory holding tokenizer.json) or a hub id.

    Args:
        name_or_path: e.g. `tokenizer/tokenizer.json`, `/models/neox/` or `EleutherAI/gpt-neox-20b`.
        eos_token: the token appended after every document; default `<|endoftext|>`.

    Raises:
        ConfigError: the path does not exist, the file is not a tokenizer, the hub cannot be reached,
            or the EOS token is not in the vocabulary.
    """
    data = _read_tokenizer_json(name_or_path)
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise ConfigError(
            f"tokenizer {name_or_path!r} is not a valid Hugging Face tokenizer.json ({e}). Pass the "
            "tokenizer.json written by `tokenizers` (Tokenizer.save), not vocab.json/merges.txt."
        ) from None
    token = eos_token or EOS_TOKEN
    eos_id = tok.token_to_id(token)
    if eos_id is None:
        hint = "" if eos_token else " If its end-of-document token has another name, pass that as the eos token."
        raise ConfigError(
            f"tokenizer {name_or_path!r} has no token {token!r} to append after each document.{hint}"
        )
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    # Ids need not be contiguous: size the dtype for the largest id too.
    largest_id = max(tok.get_vocab(with_added_tokens=True).values(), default=-1)
    return LoadedTokenizer(
        name=name_or_path,
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=vocab_size,
        eos_id=eos_id,
        eos_token=token,
        dtype=token_dtype(max(vocab_size, largest_id + 1)),
        json_bytes=data,
    )


def _read_tokenizer_json(name_or_path: str) -> bytes:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(
                f"tokenizer directory {name_or_path!r} has no tokenizer.json. Pass the path of a "
                "Hugging Face tokenizer.json file, or a directory that contains one."
            )
    if path.is_file():
        return path.read_bytes()
    if "://" in name_or_path or not _HUB_ID_RE.match(name_or_path) or name_or_path.endswith(".json"):
        raise ConfigError(
            f"tokenizer path {name_or_path!r} does not exist (resolved to {path.absolute()}). Pass the "
            "path of a local tokenizer.json (or a directory that contains one), or a Hugging Face hub id "
            "such as EleutherAI/gpt-neox-20b."
        )
    return _download_from_hub(name_or_path)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _download_from_hub(repo_id: str) -> bytes:
    offline = _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # huggingface_hub absent: let tokenizers fetch the file itself
        hf_hub_download = None

    if hf_hub_download is not None:
        try:
            # Reads the local HF cache first; the file's own bytes give the sha256 users can check.
            return Path(hf_hub_download(repo_id, "tokenizer.json", local_files_only=offline)).read_bytes()
        except LocalEntryNotFoundError as e:  # no connection, and not in the local cache
            raise _hub_unreachable(repo_id, "HF_HUB_OFFLINE is set" if offline else str(e)) from None
        except (HfHubHTTPError, ValueError) as e:  # the hub answered: no such repo or file, gated, bad id
            raise ConfigError(
                f"tokenizer {repo_id!r} was taken as a Hugging Face hub id (no such local path exists), but "
                f"its tokenizer.json could not be fetched: {type(e).__name__}: {' '.join(str(e).split())[:300]}. "
                "Check the id, or pass the path of a local tokenizer.json."
            ) from None
        except OSError as e:  # connection errors that escape the library's own handling
            raise _hub_unreachable(repo_id, str(e)) from None

    if offline:
        raise _hub_unreachable(repo_id, "HF_HUB_OFFLINE is set")
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_pretrained(repo_id).to_str().encode("utf-8")
    except Exception as e:
        raise _hub_unreachable(repo_id, str(e)) from None


def _hub_unreachable(repo_id: str, reason: str) -> ConfigError:
    reason = " ".join(reason.split())[:300]
    return ConfigError(
        f"tokenizer {repo_id!r} is not a local path, so it was taken as a Hugging Face hub id, but the "
        f"hub cannot be reached from this machine ({reason}). Download tokenizer.json from "
        f"https://huggingface.co/{repo_id} on a machine with internet access, copy it here, and pass "
        "its path instead of the hub id."
    )


# --- the fast encoder: tiktoken built from the same tokenizer.json -----------------------------


@functools.cache
def _byte_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte -> the printable character `tokenizers` writes for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _space_runs(config: Mapping[str, Any]) -> tuple[dict[int, int], str | None]:
    """Non-special added tokens as {width: id} when all are runs of 2..N spaces, else why not."""
    has_normalizer = bool(_items(config.get("normalizer"), "normalizers"))
    runs: dict[int, int] = {}
    for tok in config.get("added_tokens") or []:
        if tok.get("special"):
            continue  # never matched: Encoder sets encode_special_tokens
        content = tok.get("content", "")
        if any(tok.get(flag) for flag in ("lstrip", "rstrip", "single_word")):
            return {}, f"added token {content!r} has lstrip, rstrip or single_word"
        if len(content) < 2 or content.strip(" "):
            return {}, f"non-special added token {content!r} is not a run of spaces"
        if has_normalizer and not tok.get("normalized", True):
            return {}, f"added token {content!r} is matched before normalization"
        runs[len(content)] = tok["id"]
    if runs and sorted(runs) != list(range(2, max(runs) + 1)):
        return {}, f"added space-run tokens of widths {sorted(runs)}, not every width from 2 up"
    return runs, None


def fast_encoder_blocker(config: Mapping[str, Any]) -> str | None:
    """Why tiktoken cannot express this tokenizer exactly (structurally), or None if it can.

    `config` is the parsed tokenizer.json (best: `json.loads(tokenizer.to_str())`). Accepted: BPE
    without dropout, byte fallback, word prefix/suffix or ignore_merges; no normalizer or NFC only;
    one ByteLevel pre-tokenizer with the regex and no prefix space; no post-processor or ByteLevel's;
    non-special added tokens only if they are runs of 2..N spaces (GPT-NeoX-20B). The vocabulary
    itself is checked when the encoding is built (merge results unique and self-consistent).
    """
    model = config.get("model") or {}
    if model.get("type") != "BPE":
        return f"model is {model.get('type')!r}, not BPE"
    for key in ("dropout", "byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"):
        if model.get(key):
            return f"BPE {key} is set"
    for norm in _items(config.get("normalizer"), "normalizers"):
        if norm.get("type") != "NFC":
            return f"normalizer {norm.get('type')!r} (only NFC can be applied before tiktoken)"
    pre = _items(config.get("pre_tokenizer"), "pretokenizers")
    if len(pre) != 1 or pre[0].get("type") != "ByteLevel":
        return f"pre-tokenizers {[p.get('type') for p in pre]} (tiktoken expresses a single ByteLevel)"
    if not pre[0].get("use_regex", True) or pre[0].get("add_prefix_space", True):
        return "ByteLevel pre-tokenizer without the GPT-2 regex or with add_prefix_space"
    post = config.get("post_processor")
    if post is not None and post.get("type") != "ByteLevel":
        return f"post-processor {post.get('type')!r}"
    return _space_runs(config)[1]


@dataclass(frozen=True)
class _FastEncoding:
    """A tiktoken Encoding equivalent to a tokenizer.json, and how to turn its ranks into ids."""

    encoding: Any  # tiktoken.Encoding
    id_of_rank: np.ndarray | None  # None: ranks are the ids
    nfc: bool


def _fast_pattern(max_run: int) -> str:
    """GPT-2's regex, made to treat runs of 2..max_run spaces as matched added tokens (see module doc)."""
    if max_run < 2:
        return GPT2_PATTERN
    ws = r"(?:(?!  )\s)+"
    return GPT2_PATTERN.replace(r"\s+(?!\S)|\s+", rf"{ws}(?!\S)|{ws}") + f"| {{2,{max_run}}}"


@functools.lru_cache(maxsize=4)
def _fast_encoding(json_text: str) -> _FastEncoding | str:
    """Build the tiktoken encoding for a tokenizer.json, or say why it cannot be exact. Once per process."""
    try:
        import tiktoken
    except ImportError:
        return "tiktoken is not installed (pip install 'mixprep[fast]')"
    from tokenizers import Tokenizer

    config = json.loads(Tokenizer.from_str(json_text).to_str())  # defaults filled in
    blocker = fast_encoder_blocker(config)
    if blocker:
        return blocker
    model = config["model"]
    vocab: dict[str, int] = model["vocab"]
    chars = _byte_chars()
    byte_of = {c: b for b, c in chars.items()}
    missing = [b for b, c in chars.items() if c not in vocab]
    if missing:
        return f"{len(missing)} of the 256 byte symbols are not in the vocabulary"
    ranked: dict[bytes, int] = {bytes([b]): vocab[c] for b, c in chars.items()}
    results: list[str] = []
    for merge in model["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = left + right
        if token not in vocab or any(c not in byte_of for c in token):
            return f"merge result {token!r} is not a byte-level vocabulary entry"
        key = bytes(byte_of[c] for c in token)
        if key in ranked:
            return f"{token!r} is produced by more than one merge rule"
        ranked[key] = vocab[token]
        results.append(token)
    # Self-consistency: each merge result, encoded alone, is that one token (see the module doc).
    # Byte-level symbols hold no whitespace, so WhitespaceSplit hands the BPE model one result per word.
    probe = dict(config, normalizer=None, pre_tokenizer={"type": "WhitespaceSplit"}, post_processor=None,
                 decoder=None, added_tokens=[], truncation=None, padding=None)
    bare = Tokenizer.from_str(json.dumps(probe))
    got = bare.encode(" ".join(results), add_special_tokens=False).ids
    want = [vocab[t] for t in results]
    if got != want:
        bad = next((t for t, g in zip(results, bare.encode_batch(results, add_special_tokens=False))
                    if g.ids != [vocab[t]]), "?")
        return f"merge result {bad!r} does not encode to itself, so merge order is not a rank order"
    runs, _ = _space_runs(config)
    ids = [ranked[bytes([b])] for b in range(256)] + [ranked[k] for k in ranked if len(k) > 1]
    monotone = all(a < b for a, b in zip(want, want[1:]))
    if monotone:
        ranks = dict(ranked)
        for width, tid in runs.items():
            ranks[b" " * width] = tid
        id_of_rank = None
    else:  # ranks in merge order, mapped back to ids after encoding
        keys = [bytes([b]) for b in range(256)] + [k for k in ranked if len(k) > 1]
        keys = [k for k in keys if not (set(k) == {32} and len(k) in runs)] + [b" " * w for w in sorted(runs)]
        ranks = {k: r for r, k in enumerate(keys)}
        id_list = [runs[len(k)] if set(k) == {32} and len(k) in runs else ranked[k] for k in keys]
        id_of_rank = np.array(id_list, dtype=np.int64)
    if len(set(ranks.values())) != len(ranks) or len(set(ids)) != len(ids):
        return "token ids are not unique"
    try:
        encoding = tiktoken.Encoding(
            f"mixprep-{hashlib.sha256(json_text.encode()).hexdigest()[:12]}",
            pat_str=_fast_pattern(max(runs, default=0)),
            mergeable_ranks=ranks,
            special_tokens={},
        )
    except Exception as e:  # tiktoken rejects the table
        return f"tiktoken could not build the encoding: {e}"
    nfc = bool(_items(config.get("normalizer"), "normalizers"))
    return _FastEncoding(encoding, id_of_rank, nfc)


# Text the fast encoder must encode exactly as `tokenizers` before it is used: contractions, Unicode
# letters, numbers and marks, NFC compositions, whitespace of every kind and runs of spaces.
PROBE_TEXT = "\n".join([
    "Hello, world! It's 3.14159 -- don't you'LL know? We've 1,000,000 REASONS; they'd said 'Sure'.",
    "Ünïcödé: naïve café, e\u0301, A\u030a, \u212b, \u1100\u1161\u11a8, ﬁ, ½, ², ٣٤٥, 東京は日本の首都です。한국어 텍스트.",
    "Emoji 👩\u200d👩\u200d👧 🙂 and arrows -> => <|endoftext|> <|padding|> <|not a token|>",
    "def f(x):\n\treturn x  # two spaces\n    four\n" + " " * 24 + "x" + " " * 25 + "y" + " " * 50 + "\n",
    "tabs\t\tand\u00a0nbsp\u00a0 \u3000ideographic\u2000\u2009 \u200b\u180e\ufeff\u0085\u2028\x0b\x1c end  ",
    "\r\n\r\n  \n \n   \t \n" + "=" * 80 + " " + "a" * 300 + " 12345678901234567890 " + "'s 't 're 've 'm 'll 'd",
])


class _TiktokenBackend:
    """Encodes pieces with the fast encoding; `threads` > 1 encodes pieces of a call concurrently."""

    def __init__(self, fast: _FastEncoding, dtype: np.dtype, threads: int):
        # The core's own method raises UnicodeEncodeError on lone surrogates (the public one would
        # replace them); encode_ordinary + np.array is ~1.6x faster than encode_to_numpy (measured).
        self._encode = getattr(fast.encoding, "_core_bpe", fast.encoding).encode_ordinary
        self._id_of_rank = None if fast.id_of_rank is None else fast.id_of_rank.astype(dtype)
        self._nfc = fast.nfc
        self._dtype = dtype
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mixprep-encode") if threads > 1 else None

    def encode_one(self, text: str) -> np.ndarray:
        if self._nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        ranks = self._encode(text)
        if self._id_of_rank is None:
            return np.array(ranks, dtype=self._dtype)
        return self._id_of_rank[np.array(ranks, dtype=np.int64)]

    def encode(self, pieces: Sequence[str]) -> list[np.ndarray]:
        if self._pool is None or len(pieces) < 2:
            return [self.encode_one(p) for p in pieces]
        return list(self._pool.map(self.encode_one, pieces))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _default_threads() -> int:
    value = os.environ.get(THREADS_ENV, "").strip()
    try:
        return max(1, int(value)) if value else 1
    except ValueError:
        raise ConfigError(f"{THREADS_ENV}={value!r} is not a whole number of threads") from None


def _first_difference(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


# --- encoding --------------------------------------------------------------------------------


class Encoder:
    """Encodes documents to id arrays with EOS appended. Build one per worker (`DoFn.setup`).

    Args:
        tokenizer: from `load_tokenizer`.
        chunk_chars: texts longer than this are cut at safe points into pieces of about this many
            characters, when `chunking_blocker` allows it.
        max_call_bytes: UTF-8 bytes of text passed to one `encode_batch` call (bounds the memory the
            Encodings hold); a single larger piece goes alone.
        fast: use tiktoken when it can express the tokenizer exactly (`backend` tells; the module
            docstring says why the ids are the same); False, or MIXPREP_ENCODER=tokenizers in the
            environment: always `tokenizers`.
        threads: encoding threads; default MIXPREP_ENCODE_THREADS, else 1 (one per Beam worker
            process). tiktoken gets this many; `tokenizers` too (RAYON_NUM_THREADS, set here unless
            it is set already; it only takes effect if this process has not encoded with it yet).
        verify_bytes: UTF-8 bytes of the first texts that the fast encoder also encodes with
            `tokenizers` to compare; a difference switches to `tokenizers` and logs an error.
    """

    def __init__(
        self,
        tokenizer: LoadedTokenizer,
        *,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        max_call_bytes: int = DEFAULT_BATCH_BYTES,
        fast: bool = True,
        threads: int | None = None,
        verify_bytes: int = DEFAULT_VERIFY_BYTES,
    ):
        if chunk_chars <= 0 or max_call_bytes <= 0:
            raise ValueError("chunk_chars and max_call_bytes must be positive")
        self.threads = _default_threads() if threads is None else max(1, int(threads))
        # Rayon sizes its pool from this when `tokenizers` first encodes in this process: one thread
        # per Beam worker process, as for tiktoken (docs/PERFORMANCE.md has the measurements).
        os.environ.setdefault("RAYON_NUM_THREADS", str(self.threads))
        from tokenizers import Tokenizer

        # A private instance: documents are never truncated or padded, whatever the file says, and
        # a literal "<|endoftext|>" inside a document is text, not a document boundary.
        json_text = tokenizer.json_bytes.decode("utf-8")
        self._tok = Tokenizer.from_str(json_text)
        self._tok.no_truncation()
        self._tok.no_padding()
        self._tok.encode_special_tokens = True
        # encode_batch_fast skips offsets (1.7x faster, measured: docs/PERFORMANCE.md); older tokenizers lack it.
        self._encode_batch = getattr(self._tok, "encode_batch_fast", None) or self._tok.encode_batch
        self.name = tokenizer.name
        self.dtype = tokenizer.dtype
        self.eos_id = tokenizer.eos_id
        self._eos = np.array([tokenizer.eos_id], dtype=tokenizer.dtype)
        self.chunk_chars = chunk_chars
        self.max_call_bytes = max_call_bytes
        self.chunking_blocker = chunking_blocker(json.loads(self._tok.to_str()))
        if self.chunking_blocker:
            log.warning(
                "tokenizer %s: long documents are encoded whole (correct, but slower per character and "
                "memory-hungry) because cutting them is not proven for its pipeline: %s",
                tokenizer.name,
                self.chunking_blocker,
            )
        self._verify_left = verify_bytes
        self._fast: _TiktokenBackend | None = None
        self.fast_blocker: str | None = "not requested (fast=False)"
        if fast and os.environ.get(BACKEND_ENV, "").strip().lower() == "tokenizers":
            fast, self.fast_blocker = False, f"{BACKEND_ENV}=tokenizers"
        if fast:
            built = _fast_encoding(json_text)
            if isinstance(built, str):
                self.fast_blocker = built
            else:
                backend = _TiktokenBackend(built, self.dtype, self.threads)
                self.fast_blocker = self._differs(backend, [PROBE_TEXT], "the built-in probe text")
                if self.fast_blocker is None:
                    self._fast = backend
                else:
                    backend.close()
            if self.fast_blocker:
                log.warning("tokenizer %s: encoding with `tokenizers`, not tiktoken: %s", self.name, self.fast_blocker)

    @property
    def backend(self) -> str:
        """"tiktoken" or "tokenizers": what encodes now (a failed check switches to "tokenizers")."""
        return "tokenizers" if self._fast is None else "tiktoken"

    def pieces(self, text: str) -> list[str]:
        """How `encode_batch` cuts `text`: one piece unless it is long and cutting is proven."""
        if self.chunking_blocker or len(text) <= self.chunk_chars:
            return [text]
        return split_at_safe_cuts(text, self.chunk_chars)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One array of ids per text, each ending with the EOS id; no other special tokens are added."""
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for piece in self.pieces(text):
                pieces.append(piece)
                owners.append(i)
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        start = 0
        for call in batches_by_bytes(pieces, str, self.max_call_bytes):
            for owner, ids in zip(owners[start : start + len(call)], self._encode_pieces(call)):
                parts[owner].append(ids)
            start += len(call)
        return [np.concatenate([*p, self._eos]) for p in parts]

    def close(self) -> None:
        """Stop the fast encoder's threads, if any (best effort; `DoFn.teardown`)."""
        if self._fast is not None:
            self._fast.close()

    def _encode_slow(self, pieces: Sequence[str]) -> list[np.ndarray]:
        encodings = self._encode_batch(list(pieces), add_special_tokens=False)
        return [np.array(e.ids, dtype=self.dtype) for e in encodings]

    def _encode_pieces(self, pieces: list[str]) -> list[np.ndarray]:
        if self._fast is None:
            return self._encode_slow(pieces)
        if self._verify_left > 0:
            n, size = 0, 0
            while n < len(pieces) and size < self._verify_left:
                size += utf8_len(pieces[n])
                n += 1
            self._verify_left -= size
            reason = self._differs(self._fast, pieces[:n], "a document being encoded")
            if reason:
                log.error("tokenizer %s: %s; switching to `tokenizers` for good", self.name, reason)
                self.fast_blocker = reason
                self._fast.close()
                self._fast = None
                return self._encode_slow(pieces)
        try:
            return self._fast.encode(pieces)
        except UnicodeEncodeError:  # lone surrogates: tiktoken would replace them; `tokenizers` decides
            return self._encode_slow(pieces)

    def _differs(self, fast: _TiktokenBackend, pieces: Sequence[str], what: str) -> str | None:
        """Why tiktoken's ids for `pieces` differ from `tokenizers`' (None if they do not)."""
        try:
            fast_ids = fast.encode(pieces)
        except UnicodeEncodeError:  # lone surrogates: `_encode_pieces` leaves these to `tokenizers`
            return None
        for piece, got, want in zip(pieces, fast_ids, self._encode_slow(pieces)):
            if not np.array_equal(got, want):
                at = _first_difference(got, want)
                return (
                    f"tiktoken's ids differ from tokenizers' on {what} ({len(piece)} characters, "
                    f"first at token {at}: {got[at:at + 5].tolist()} vs {want[at:at + 5].tolist()})"
                )
        return None
