"""Reading a Hugging Face tokenizer.json (a local file or folder, or a hub id) into a `LoadedTokenizer`.

At pipeline construction, `load_tokenizer` reads the file once and returns a small picklable
`LoadedTokenizer`: the JSON bytes and their sha256, vocabulary size, EOS id and token dtype. Steps that
do not encode hold its `TokenizerInfo` (`about()`), the same facts without the file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..mmidx import dtype_for_vocab

EOS_TOKEN = "<|endoftext|>"  # GPT-NeoX-20B id 0; appended after every document
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """What the steps that do not encode need to know about a tokenizer (no tokenizer.json).

    Attributes:
        name: what the user gave (path or hub id), for messages and manifests.
        sha256: hex digest of the tokenizer.json bytes; part of the token cache's fingerprint.
        vocab_size: `get_vocab_size(with_added_tokens=True)`.
        eos_id: id of `eos_token`, appended after every document.
        dtype: `mmidx.dtype_for_vocab` of the vocabulary size, or of the largest id + 1 if larger.
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
        dtype=dtype_for_vocab(max(vocab_size, largest_id + 1)),
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
