"""The structure checks both tokenizer arguments start from: byte-level BPE with the GPT-2 regex.

Cutting long texts (`cuts`) and the tiktoken fast path (`fast`) are proven only for that shape
(docs/TOKENIZER.md); `pipeline_blocker` says why a parsed tokenizer.json is not of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The ByteLevel pre-tokenizer's regex (use_regex=True), as `tokenizers` writes it.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Added-token options that make the matcher look at text outside the match.
LOOK_PAST_FLAGS = ("lstrip", "rstrip", "single_word")


def components(node: Mapping | None, key: str) -> list[Mapping]:
    """A normalizer/pre-tokenizer as a flat list of components (a `Sequence` unpacked)."""
    if node is None:
        return []
    if node.get("type") == "Sequence":
        return [c for child in node.get(key, []) for c in components(child, key)]
    return [node]


def looks_past(token: Mapping[str, Any]) -> str | None:
    """The first of `LOOK_PAST_FLAGS` set on an added token, or None."""
    return next((flag for flag in LOOK_PAST_FLAGS if token.get(flag)), None)


def pipeline_blocker(config: Mapping[str, Any], model_flags: tuple[str, ...] = ("dropout",)) -> str | None:
    """Why `config` is not byte-level BPE with the GPT-2 regex, or None if it is.

    `config` is the parsed tokenizer.json (best: `json.loads(tokenizer.to_str())`, which fills in
    defaults). Admitted: BPE with none of `model_flags` set, no normalizer or NFC only, one ByteLevel
    pre-tokenizer with use_regex and without add_prefix_space, no post-processor or ByteLevel's (which
    only trims offsets). Added tokens are each caller's own check.
    """
    model = config.get("model") or {}
    if model.get("type") != "BPE":
        return f"model is {model.get('type')!r}, not BPE"
    for key in model_flags:
        if model.get(key):
            return f"BPE {key} is set"
    for norm in components(config.get("normalizer"), "normalizers"):
        if norm.get("type") != "NFC":
            return f"normalizer {norm.get('type')!r} (only NFC is proven)"
    pre = components(config.get("pre_tokenizer"), "pretokenizers")
    if len(pre) != 1 or pre[0].get("type") != "ByteLevel":
        return f"pre-tokenizers {[p.get('type') for p in pre]} (only a single ByteLevel is proven)"
    if not pre[0].get("use_regex", True):
        return "ByteLevel pre-tokenizer has use_regex=false (the whole text would be one pre-token)"
    if pre[0].get("add_prefix_space", True):
        return "ByteLevel pre-tokenizer has add_prefix_space=true"
    post = config.get("post_processor")
    if post is not None and post.get("type") != "ByteLevel":
        return f"post-processor {post.get('type')!r} (only none or ByteLevel is proven)"
    return None
