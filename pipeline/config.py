"""Mixture configs: YAML in ``mixtures/`` loaded into frozen, typed dataclasses.

    cfg = load_mixture("mixtures/stage1.yaml", overrides={"total_tokens": 2_000_000})

Every key is checked: an unknown key is an error naming the file, the key and the nearest valid key;
weights are shares of tokens and must sum to 1; a tokenizer path must exist. Paths in the file are
relative to the data root (sources) or to the config file's folder (tokenizer).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import typing
from typing import Any

import yaml

from .bundled import SMALL_TOKENIZER, small_tokenizer_path
from .dedup.content import NORMALIZATIONS
from .errors import ConfigError
from .sources.kinds import KINDS
from .sources.spec import DatasetRef, SourceSpec

__all__ = ["MixtureConfig", "SourceConfig", "DedupConfig", "NearDedupConfig", "LongDocPolicy", "load_mixture",
           "config_hash", "LAYOUTS"]

# How the pack stage writes a shard's entries (docs/FORMAT.md, "How trainers make samples of it").
LAYOUTS = {
    "samples": "every entry one training sample of seq_len + 1 tokens (GPT-NeoX pack_impl: unpacked, "
               "mixprep's own reader)",
    "documents": "every entry one selected document copy, EOS included, in the mixture's order: the trainer "
                 "packs (Megatron-LM, GPT-NeoX packed)",
}


def _help(text: str, default: Any = dataclasses.MISSING) -> Any:
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"help": text})
    if isinstance(default, (list, dict, tuple)):
        return dataclasses.field(default_factory=lambda: default, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One source in a mixture: how to read it (``spec``) and how much of the mixture it makes."""

    name: str = _help("unique name used in ids, caches and manifests")
    kind: str = _help(f"reader kind: {', '.join(KINDS)}")
    weight: float = _help("share of the mixture's tokens, 0..1; all weights sum to 1")
    category: str = _help("a label to total shares by (web, code, books, ...)", "other")
    root: str = _help("folder relative to the data root (or an absolute URI)", "")
    paths: tuple[str, ...] = _help("globs under root; the kind's defaults when empty", ())
    hub: str | None = _help("Hugging Face hub dataset id to stream instead of root", None)
    revision: str = _help("hub revision", "main")
    include: tuple[str, ...] = _help("subsets to keep (empty: all)", ())
    exclude: tuple[str, ...] = _help("subsets to drop", ())
    text_field: str = _help("field holding the text; the kind's default when empty", "")
    skip_corrupt_files: bool = _help("count and skip structurally broken files, and record as refused the matched "
                                     "paths that are no file to read (links to nothing, folders, pipes), instead of "
                                     "failing", False)
    max_repetition: float = _help("most epochs of any part of this source the mixture may take", 1.0)
    long_documents: bool = _help("apply the mixture's long_documents rule to this source", True)
    dataset: DatasetRef | None = _help(
        "kind hf_dataset: {path, name, split, revision} of a Hugging Face dataset (hub id, local hub-layout "
        "folder or save_to_disk folder) to read instead of root/paths/hub", None)

    @property
    def spec(self) -> SourceSpec:
        return SourceSpec(
            name=self.name,
            kind=self.kind,
            root=self.root,
            paths=self.paths,
            hub=self.hub,
            revision=self.revision,
            include=self.include,
            exclude=self.exclude,
            text_field=self.text_field,
            skip_corrupt_files=self.skip_corrupt_files,
            dataset=self.dataset,
        )


@dataclasses.dataclass(frozen=True)
class LongDocPolicy:
    """Upweight naturally long documents inside each source (docs/RECIPE.md; after Fu et al. 2024)."""

    threshold: int = _help("a document is long when its tokens (EOS included) are at least this", 4096)
    factor: float = _help("the long bucket's token fraction goes from f0 to max(f0, min(cap, factor * f0))", 2.0)
    cap: float = _help("upper bound on what upweighting raises the long fraction to (never lowers it)", 0.8)
    fraction: float | None = _help("an explicit long-bucket fraction instead of factor/cap", None)


@dataclasses.dataclass(frozen=True)
class NearDedupConfig:
    """Near duplicates: MinHash of token n-grams (from the caches), LSH bands, verified (docs/DEDUP.md)."""

    threshold: float = _help("a pair is a near duplicate when its estimated Jaccard similarity of token n-gram "
                             "sets is at least this (0 < threshold <= 1); the LSH bands follow from it", 0.8)
    ngram: int = _help("token n-gram length", 5)
    num_perm: int = _help("MinHash permutations (values per signature)", 128)


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """Duplicates across the mixture's sources, removed before planning (docs/DEDUP.md)."""

    exact: bool = _help("remove exact duplicates (same content key) across all sources before the plan", True)
    normalization: str = _help("what the content key hashes: nfc_whitespace (Unicode NFC, whitespace runs as one "
                               "space, stripped) or raw (the text's bytes); part of the token caches' fingerprint",
                               "nfc_whitespace")
    priority: tuple[str, ...] = _help("source names in the order their copy is kept; unlisted sources come after, "
                                      "then the stable doc hash decides", ())
    near: NearDedupConfig | None = _help("also remove near duplicates (MinHash + LSH over the cached token ids, in "
                                         "Beam); absent: exact only", None)


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """A whole mixture: how many tokens, cut how, from which sources in which shares."""

    name: str = _help("the mixture's name; shards are named NAME-NNNNN-of-MMMMM")
    total_tokens: int = _help("tokens in the mixture (before cutting into samples)")
    seq_len: int = _help("context length; every sample holds seq_len + 1 tokens")
    tokenizer: str = _help("a HF tokenizer.json (a path relative to this file), a hub id, or `small` (the bundled "
                           "test tokenizer)")
    sources: tuple[SourceConfig, ...] = _help("the sources and their shares")
    seed: int = _help("seeds every keep/repeat/order decision", 1234)
    layout: str = _help(f"what one shard entry is: {'; '.join(f'{k}: {v}' for k, v in LAYOUTS.items())}",
                        "samples")
    shards: int = _help("number of output shards (0: from tokens_per_shard)", 0)
    tokens_per_shard: int = _help("target tokens per output shard when shards is 0", 1 << 30)
    length_buckets: tuple[int, ...] = _help("token-count bounds splitting each source into buckets", ())
    long_documents: LongDocPolicy | None = _help("upweight long documents (stage 2)", None)
    validation_tokens: int = _help(
        "tokens of a held-out validation mixture: same source shares, natural lengths, whole documents no training "
        "copy uses, at most one copy each (0: none)", 0)
    test_tokens: int = _help("tokens of a held-out test mixture, disjoint from training and validation (0: none)", 0)
    tokenize_whole: bool = _help(
        "tokenize every source whole, even one that holds 4x or more of what this mixture takes from it "
        "(by default only a sample of such a source is tokenized; whole caches serve later, larger mixtures)", False)
    dedup: DedupConfig | None = _help("deduplication across sources before planning (off when absent)", None)
    description: str = _help("free text", "")
    origin: str = _help("the file this config was loaded from (not part of the config itself)", "")
    named_tokenizer: str = _help("the tokenizer the file names, when an override replaced it (set by mixprep)", "")

    @property
    def tokenizer_path(self) -> str:
        """The tokenizer as a loadable path: relative paths are relative to the config's folder."""
        t = self.tokenizer
        if t == SMALL_TOKENIZER:  # the bundled test tokenizer, by name: the config stays the same on every machine
            return small_tokenizer_path()
        if _looks_like_hub_id(t) or os.path.isabs(t) or not self.origin:
            return t
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.origin)), t))

    @property
    def num_shards(self) -> int:
        if self.shards:
            return self.shards
        return max(1, math.ceil(self.total_tokens / self.tokens_per_shard))

    @property
    def bucket_bounds(self) -> tuple[int, ...]:
        """Sorted length-bucket bounds, including the long-document threshold."""
        bounds = set(self.length_buckets)
        if self.long_documents:
            bounds.add(self.long_documents.threshold)
        return tuple(sorted(bounds))

    @property
    def normalization(self) -> str:
        """The content keys' normalization the token caches hold (the default without a dedup section)."""
        return self.dedup.normalization if self.dedup else "nfc_whitespace"

    @property
    def exact_dedup(self) -> bool:
        return bool(self.dedup and self.dedup.exact)

    @property
    def near_dedup(self) -> bool:
        return bool(self.dedup and self.dedup.near)

    @property
    def near_params(self):
        """The MinHash / LSH parameters of near dedup (``dedup.minhash.params_for``), None when it is off."""
        if not self.near_dedup:
            return None
        from .dedup.minhash import params_for

        near = self.dedup.near
        return params_for(near.threshold, near.num_perm, near.ngram)

    @property
    def held_out_tokens(self) -> dict[str, int]:
        """{split: tokens} of the held-out splits asked for, in the order their documents are drawn."""
        return {k: v for k, v in (("valid", self.validation_tokens), ("test", self.test_tokens)) if v}

    def split_shards(self, tokens: int) -> int:
        """Shards of a held-out split: the training shards' size, at least one."""
        return max(1, math.ceil(self.num_shards * tokens / self.total_tokens))

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def long_policy(self, name: str) -> LongDocPolicy | None:
        """The long-document rule as it applies to source ``name`` (None: natural proportions)."""
        return self.long_documents if self.source(name).long_documents else None

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-ready data (the same on every machine: no local paths)."""
        d = _to_jsonable(dataclasses.asdict(self))
        d.pop("origin")
        d.pop("named_tokenizer")
        for key in ("validation_tokens", "test_tokens", "dedup"):  # absent when unset: such a mixture hashes as before
            if not d[key]:
                d.pop(key)
        if d.get("dedup") and d["dedup"]["near"] is None:  # absent when off: an exact-only config hashes as before
            d["dedup"].pop("near")
        return d


def config_hash(cfg: MixtureConfig) -> str:
    """sha256 of the resolved config, as canonical JSON."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()


def _to_jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_jsonable(x) for x in v]
    return v


def load_mixture(path: str, overrides: dict[str, Any] | None = None) -> MixtureConfig:
    """Load and check a mixture file; ``overrides`` (e.g. from the command line) win over the file."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"mixture file {path} does not exist.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e}).") from None
    except (OSError, RecursionError) as e:
        raise ConfigError(f"{path}: cannot be read ({e}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level.")
    for key in ("origin", "named_tokenizer"):
        if key in raw:
            raise ConfigError(f"{path}: {key!r} is set by mixprep, not by the file.")
    named = raw.get("tokenizer")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    cfg = dataclasses.replace(_build(MixtureConfig, raw, path, ""), origin=path,
                              named_tokenizer=named if isinstance(named, str) and named != raw["tokenizer"] else "")
    tok = cfg.tokenizer_path
    if not _looks_like_hub_id(tok) and not os.path.exists(tok):
        raise ConfigError(
            f"{path}: tokenizer {cfg.tokenizer!r} not found (looked at {tok}). Give a path to a "
            "tokenizer.json (relative to the mixture file) or a hub id, or pass --tokenizer."
        )
    _check(cfg, path)
    return cfg


def _looks_like_hub_id(s: str) -> bool:
    # "EleutherAI/gpt-neox-20b": one slash, no file suffix, not an existing path.
    return s.count("/") == 1 and not s.endswith(".json") and not os.path.exists(s) and not s.startswith(".")


def _build(cls, raw: Any, path: str, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where or 'the file'} must be a mapping, found {type(raw).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean {near[0]!r}?" if near else f" Valid keys: {', '.join(fields)}."
            raise ConfigError(f"{path}: unknown key '{where}{key}'.{hint}")
    values = {}
    for name, f in fields.items():
        key = f"{where}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: missing required key {key!r} ({f.metadata.get('help', '')}).")
            continue
        values[name] = _coerce(raw[name], hints[name], path, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, path: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, path, key)
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {key!r} must be a list, found {value!r}.")
        if args and args[0] is SourceConfig:
            return tuple(_build(SourceConfig, v, path, f"{key}[{i}].") for i, v in enumerate(value))
        return tuple(_coerce(v, args[0], path, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, f"{key}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key!r} must be true or false, found {value!r}.")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                value = int(float(value.replace("_", ""))) if value.strip() else value
            except (ValueError, OverflowError):  # "abc", "inf"
                pass
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key!r} must be an integer, found {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
            raise ConfigError(f"{path}: {key!r} must be a number, found {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key!r} must be a string, found {value!r}.")
        return value
    return value


def _check(cfg: MixtureConfig, path: str) -> None:
    if cfg.total_tokens <= 0:
        raise ConfigError(f"{path}: 'total_tokens' must be positive, found {cfg.total_tokens}.")
    if cfg.seq_len <= 0:
        raise ConfigError(f"{path}: 'seq_len' must be positive, found {cfg.seq_len}.")
    for key in ("validation_tokens", "test_tokens"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{path}: {key!r} must be >= 0, found {getattr(cfg, key)}.")
    if cfg.layout not in LAYOUTS:
        near = difflib.get_close_matches(cfg.layout, list(LAYOUTS), n=1, cutoff=0.5)
        hint = f" Did you mean {near[0]!r}?" if near else f" Valid layouts: {', '.join(LAYOUTS)}."
        raise ConfigError(f"{path}: unknown layout {cfg.layout!r}.{hint}")
    if cfg.shards < 0 or cfg.tokens_per_shard <= 0:
        raise ConfigError(f"{path}: 'shards' must be >= 0 and 'tokens_per_shard' > 0.")
    if not cfg.sources:
        raise ConfigError(f"{path}: 'sources' is empty.")
    names = [s.name for s in cfg.sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: source names must be unique; repeated: {', '.join(dupes)}.")
    for i, s in enumerate(cfg.sources):
        where = f"sources[{i}] ({s.name})"
        if s.kind not in KINDS:
            near = difflib.get_close_matches(s.kind, list(KINDS), n=1, cutoff=0.5)
            hint = f" Did you mean {near[0]!r}?" if near else f" Known kinds: {', '.join(KINDS)}."
            raise ConfigError(f"{path}: {where}: unknown kind {s.kind!r}.{hint}")
        if not 0.0 <= s.weight <= 1.0:
            raise ConfigError(f"{path}: {where}: 'weight' must be between 0 and 1, found {s.weight}.")
        if s.max_repetition <= 0:
            raise ConfigError(f"{path}: {where}: 'max_repetition' must be positive, found {s.max_repetition}.")
        _check_dataset(s, path, where)
        if s.kind == "files" and not s.paths and not s.hub:
            raise ConfigError(f"{path}: {where}: kind 'files' needs 'paths' (globs under 'root').")
    total = sum(s.weight for s in cfg.sources)
    if abs(total - 1.0) > 1e-6:
        listing = ", ".join(f"{s.name}={s.weight:g}" for s in cfg.sources)
        raise ConfigError(f"{path}: source weights must sum to 1 (shares of tokens); "
                          f"they sum to {total:.6g} ({listing}).")
    if any(b <= 0 for b in cfg.length_buckets):
        raise ConfigError(f"{path}: 'length_buckets' bounds must be positive token counts.")
    _check_dedup(cfg, path)
    p = cfg.long_documents
    if p is not None:
        if p.threshold <= 0 or p.factor <= 0 or not 0 < p.cap <= 1:
            raise ConfigError(f"{path}: 'long_documents' needs threshold > 0, factor > 0 and 0 < cap <= 1.")
        if p.fraction is not None and not 0 <= p.fraction <= 1:
            raise ConfigError(f"{path}: 'long_documents.fraction' must be between 0 and 1.")


def _check_dedup(cfg: MixtureConfig, path: str) -> None:
    """The dedup section names a known normalization and only the mixture's own sources, once each."""
    d = cfg.dedup
    if d is None:
        return
    if d.normalization not in NORMALIZATIONS:
        raise ConfigError(f"{path}: 'dedup.normalization' must be one of {', '.join(NORMALIZATIONS)}, "
                          f"found {d.normalization!r}.")
    names = [s.name for s in cfg.sources]
    for i, name in enumerate(d.priority):
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
            hint = f" Did you mean {near[0]!r}?" if near else f" The mixture's sources: {', '.join(names)}."
            raise ConfigError(f"{path}: 'dedup.priority[{i}]': {name!r} is not a source of this mixture.{hint}")
        if name in d.priority[:i]:
            raise ConfigError(f"{path}: 'dedup.priority[{i}]': {name!r} is listed twice; list each source once.")
    near = d.near
    if near is not None:
        if not 0.0 < near.threshold <= 1.0:
            raise ConfigError(f"{path}: 'dedup.near.threshold' must be in (0, 1], found {near.threshold}.")
        for key in ("ngram", "num_perm"):
            if getattr(near, key) < 1:
                raise ConfigError(f"{path}: 'dedup.near.{key}' must be a positive integer, found {getattr(near, key)}.")


def _check_dataset(s: SourceConfig, path: str, where: str) -> None:
    """A Hugging Face dataset source names its dataset, and only that: ``dataset`` replaces root/paths/hub."""
    if s.kind == "hf_dataset" and s.dataset is None:
        raise ConfigError(f"{path}: {where}: kind 'hf_dataset' needs 'dataset' "
                          "(e.g. dataset: {path: HuggingFaceFW/fineweb-edu, name: sample-10BT, split: train}).")
    if s.dataset is None:
        return
    if s.kind != "hf_dataset":
        raise ConfigError(f"{path}: {where}: 'dataset' is read by kind 'hf_dataset', not {s.kind!r}.")
    given = [k for k in ("root", "paths", "hub") if getattr(s, k)]
    if given:
        raise ConfigError(f"{path}: {where}: 'dataset' says where the data is; drop {', '.join(map(repr, given))} "
                          "(a relative dataset.path is under the data root).")
    if not s.dataset.path or not s.dataset.split:
        raise ConfigError(f"{path}: {where}: 'dataset.path' and 'dataset.split' must not be empty.")
