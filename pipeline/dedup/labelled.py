"""A labelled corpus for measuring deduplication, built from a seed (no network, nothing read).

Base documents are prose-like text: sentences of words drawn from a Zipf-like vocabulary (common
English words first, then made-up words, and a few accented ones so Unicode variants differ), in
paragraphs. Every base document has one original and some of these, each placed in a source:

- ``exact``: the same text in another source;
- ``whitespace``: doubled spaces, CRLF line ends, tabs, NBSP, leading/trailing blanks;
- ``unicode``: the text in NFD (accents decomposed), with a trailing newline;
- ``edit``: a copy with ``rate`` of its words edited (substituted, inserted or deleted; at least one).

A share of the bases carry one of a few shared boilerplate blocks (a header or footer as web pages
do), so that unrelated documents overlap a little; a smaller share are templated pages, a long shared
template and a short body of their own, so that two of them overlap a lot (Jaccard ~0.4-0.7): distinct
documents that a low threshold merges, and precision counts.

The ground truth is the base: two documents are duplicates when they come from the same base.
``score`` turns a resolution (each document's survivor) into precision and recall per category.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import unicodedata
from typing import Sequence

import numpy as np

from ..hashing import doc_hash
from .clusters import DocRef, candidate_pairs, keep_order, resolve, verify_pairs
from .content import DEFAULT_NORMALIZATION, content_keys
from .minhash import DEFAULT_PARAMS, EMPTY, MinHashParams, band_matrix, signatures

__all__ = ["tokenizer_words", "LabelledDoc", "LabelledCorpus", "Score", "build_corpus", "score", "EDIT_RATES",
           "CATEGORIES", "resolve_corpus"]

EDIT_RATES = (0.01, 0.05, 0.10, 0.20)
VARIANTS = ("exact", "whitespace", "unicode")

_COMMON = (
    "the of and to a in is that it was for on are as with his they at be this from have or by one had not but "
    "what all were when we there can an your which their said if do will each about how up out them then she "
    "many some so these would other into has more her two like him see time could no make than first been its "
    "who now people my made over did down only way find use may water long little very after words called just "
    "where most know get through back much before go good new write our used me man too any day same right look "
    "think also around another came come work three word must because does part even place well such here take "
    "why things help put years different away again off went old number great tell men say small every found "
    "still between name should home big give air line set own under read last never us left end along while "
    "might next sound below saw something thought both few those always looked show large often together asked "
    "house world going want school important until form food keep children feet land side without boy once "
    "animals life enough took sometimes four head above kind began almost live page got earth need far hand "
    "high year mother light parts country father let night following picture being study second eyes soon "
    "times story boys since white days ever paper hard near sentence better best across during today others "
    "however sure means knew its try told young miles sun ways thing whole hear example heard several change "
    "answer room sea against top turned learn point city play toward five using himself usually money seen"
).split()
_ACCENTED = ("café", "naïve", "résumé", "façade", "Zürich", "São", "Ångström", "déjà", "piñata", "crème", "über",
             "Dvořák", "Łódź", "señor", "coöperate", "Kraków", "Ærø", "fiancée", "entrée", "Málaga")
_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "cl", "dr", "gr",
           "pl", "st", "tr", "sh", "ch", "th")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io")
_CODAS = ("", "", "n", "r", "s", "t", "l", "nd", "st", "ck", "ng")


@dataclasses.dataclass(frozen=True)
class LabelledDoc:
    source: str
    part: int
    row: int
    text: str
    base: int  # index of the base document: same base = duplicates
    kind: str  # "original", one of VARIANTS, or "edit"
    rate: float = 0.0  # share of words edited (kind "edit")

    @property
    def category(self) -> str:
        return f"edit {self.rate:.0%}" if self.kind == "edit" else self.kind


@dataclasses.dataclass(frozen=True)
class LabelledCorpus:
    docs: tuple[LabelledDoc, ...]  # sorted by (source, part, row)
    seed: int

    def texts(self) -> list[str]:
        return [d.text for d in self.docs]

    def categories(self) -> list[str]:
        return sorted({d.category for d in self.docs}, key=_category_order)

    def refs(self) -> list[DocRef]:
        """Each document's DocRef; its doc id is ``part-PART.jsonl:LINE`` as a reader would name it."""
        return [DocRef(d.source, d.part, d.row, doc_hash(f"part-{d.part:05d}.jsonl:{d.row + 1}")) for d in self.docs]

    def original_of(self) -> np.ndarray:
        """For each document, the index of its base's original."""
        orig = {d.base: i for i, d in enumerate(self.docs) if d.kind == "original"}
        return np.array([orig[d.base] for d in self.docs], dtype=np.int64)


CATEGORIES = ("original",) + VARIANTS + tuple(f"edit {r:.0%}" for r in EDIT_RATES)


def _category_order(c: str) -> tuple:
    return (CATEGORIES.index(c), c) if c in CATEGORIES else (len(CATEGORIES), c)


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    made: list[str] = []
    seen = set(_COMMON)
    while len(made) < size - len(_COMMON):
        w = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(rng.choice((1, 2, 2, 3))))
        w += rng.choice(_CODAS)
        if w not in seen:
            seen.add(w)
            made.append(w)
    return list(_COMMON) + made


def tokenizer_words(tokenizer, min_chars: int = 2) -> list[str]:
    """The whole words a tokenizer has single tokens for (``Ġword``: lower-case ASCII letters, more than
    ``min_chars``), in id order: BPE merges the most frequent pairs first, so roughly frequency order.
    A corpus of them has about the tokens per word of real prose (1.23 with tokenizer/tokenizer.json),
    not the 2.8 that made-up words split into. ``tokenizer``: a ``pipeline.tokenizer.LoadedTokenizer``."""
    vocab = tokenizer.tokenizer.get_vocab()
    words = [(i, t[1:]) for t, i in vocab.items()
             if t.startswith("\u0120") and len(t) > min_chars and t[1:].isascii() and t[1:].isalpha()
             and t[1:].islower()]
    return [w for _, w in sorted(words)]


class _Words:
    """Draws words with Zipf-like frequencies (rank r has weight 1/(r+10))."""

    def __init__(self, rng: random.Random, size: int, vocabulary: Sequence[str] | None = None):
        self.rng = rng
        self.vocab = list(dict.fromkeys(vocabulary)) if vocabulary else _vocabulary(rng, size)
        weights = [1.0 / (r + 10) for r in range(len(self.vocab))]
        total = sum(weights)
        acc, self.cum = 0.0, []
        for w in weights:
            acc += w / total
            self.cum.append(acc)

    def word(self) -> str:
        if self.rng.random() < 0.01:
            return self.rng.choice(_ACCENTED)
        return self.vocab[min(bisect.bisect(self.cum, self.rng.random()), len(self.vocab) - 1)]

    def sentence(self) -> list[str]:
        words = [self.word() for _ in range(self.rng.randint(5, 22))]
        words[0] = words[0][:1].upper() + words[0][1:]
        if len(words) > 8 and self.rng.random() < 0.4:
            k = self.rng.randint(3, len(words) - 3)
            words[k] += ","
        words[-1] += self.rng.choice((".", ".", ".", "?", "!"))
        return words

    def text(self, n_words: int) -> str:
        paragraphs, count = [], 0
        while count < n_words:
            para: list[str] = []
            for _ in range(self.rng.randint(2, 7)):
                para += self.sentence()
            paragraphs.append(para)
            count += len(para)
        # One accented word at least, so a document's NFD form differs from it.
        para = paragraphs[self.rng.randrange(len(paragraphs))]
        para.insert(self.rng.randrange(len(para) + 1), self.rng.choice(_ACCENTED))
        return "\n\n".join(" ".join(p) for p in paragraphs)


def _whitespace_variant(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 20)):  # doubled spaces, tabs, NBSP between some words
        k = rng.randrange(1, len(words)) if len(words) > 1 else 0
        words[k] = rng.choice(("  ", "\t", "\u00a0", " \u3000")) + words[k].lstrip(" ")
    out = " ".join(words).replace("\n", "\r\n")
    return rng.choice(("", " ", "\n")) + out + rng.choice(("\n", "\n\n", "  \n", "\r\n"))


def _unicode_variant(text: str) -> str:
    return unicodedata.normalize("NFD", text) + "\n"


def _edit(rng: random.Random, words_of: _Words, text: str, rate: float) -> str:
    words = text.split(" ")
    for _ in range(max(1, round(rate * len(words)))):
        op = rng.choice(("sub", "ins", "del")) if len(words) > 1 else "ins"
        k = rng.randrange(len(words))
        if op == "sub":
            new = words_of.word()
            while new == words[k]:
                new = words_of.word()
            words[k] = new
        elif op == "ins":
            words.insert(k, words_of.word())
        else:
            del words[k]
    return " ".join(words)


def build_corpus(seed: int = 0, bases: int = 150, sources: Sequence[str] = ("web", "c4", "pile", "books"),
                 edit_rates: Sequence[float] = EDIT_RATES, variants: Sequence[str] = VARIANTS,
                 words: tuple[int, int] = (80, 1200), boilerplate_share: float = 0.3, templated_share: float = 0.1,
                 vocab_size: int = 20000,
                 rows_per_part: int = 64, vocabulary: Sequence[str] | None = None) -> LabelledCorpus:
    """The labelled corpus for ``seed``: every base in its original, each of ``variants`` and one edited
    copy per rate, placed at random in ``sources`` (a copy never in its original's source), shuffled
    into parts of ``rows_per_part`` rows. Base lengths in words are log-uniform in ``words``. Words come
    from ``vocabulary`` in its order of frequency (e.g. ``tokenizer_words``), else from common English
    words then ``vocab_size`` made-up ones."""
    if len(sources) < 2:
        raise ValueError("copies go to another source: give at least two sources")
    rng = random.Random(f"mixprep-labelled:{seed}")
    gen = _Words(rng, vocab_size, vocabulary)
    boilerplates = [gen.text(rng.randint(40, 120)) for _ in range(4)]
    templates = [gen.text(rng.randint(150, 250)) for _ in range(2)]
    drafts: list[tuple[str, str, int, str, float]] = []  # (source, text, base, kind, rate)
    for b in range(bases):
        n = int(round(np.exp(rng.uniform(np.log(words[0]), np.log(words[1])))))
        if rng.random() < templated_share:  # a page of a site: the template, then a few lines of its own
            text = rng.choice(templates) + "\n\n" + gen.text(rng.randint(20, 60))
        else:
            text = gen.text(n)
        if rng.random() < boilerplate_share:  # shared header or footer: unrelated documents overlap
            block = rng.choice(boilerplates)
            text = block + "\n\n" + text if rng.random() < 0.5 else text + "\n\n" + block
        home = rng.choice(list(sources))
        others = [s for s in sources if s != home]
        drafts.append((home, text, b, "original", 0.0))
        for v in variants:
            copy = text if v == "exact" else _whitespace_variant(rng, text) if v == "whitespace" \
                else _unicode_variant(text)
            drafts.append((rng.choice(others), copy, b, v, 0.0))
        norm = " ".join(text.split())
        for rate in edit_rates:
            edited = _edit(rng, gen, text, rate)
            while " ".join(edited.split()) == norm:  # edits that cancel out would make an exact copy
                edited = _edit(rng, gen, text, rate)
            drafts.append((rng.choice(others), edited, b, "edit", float(rate)))
    rng.shuffle(drafts)
    placed: dict[str, int] = {}
    docs = []
    for source, text, b, kind, rate in drafts:
        k = placed.get(source, 0)
        placed[source] = k + 1
        docs.append(LabelledDoc(source, k // rows_per_part, k % rows_per_part, text, b, kind, rate))
    docs.sort(key=lambda d: (d.source, d.part, d.row))
    return LabelledCorpus(tuple(docs), seed)


@dataclasses.dataclass(frozen=True)
class Score:
    """One category's outcome. ``found``: documents in the same cluster as their base's original
    (recall's numerator); ``removed``: documents dropped; ``wrong``: dropped for a document of another base."""

    category: str
    docs: int
    found: int
    removed: int
    wrong: int

    @property
    def recall(self) -> float:
        return self.found / self.docs if self.docs else 1.0

    @property
    def precision(self) -> float:
        return (self.removed - self.wrong) / self.removed if self.removed else 1.0


def score(corpus: LabelledCorpus, kept: Sequence[int] | np.ndarray) -> dict[str, Score]:
    """Precision and recall per category (and "all") of a resolution: ``kept[i]`` is the index of the
    document kept in document i's place (i itself when i is kept), as ``clusters.resolve`` returns.

    An original counts as found when it is in no cluster with another base's document."""
    kept = np.asarray(kept, dtype=np.int64)
    if kept.shape != (len(corpus.docs),):
        raise ValueError(f"kept has shape {kept.shape}, the corpus {len(corpus.docs)} documents")
    base = np.array([d.base for d in corpus.docs], dtype=np.int64)
    orig = corpus.original_of()
    same_cluster_as_original = kept == kept[orig]
    removed = kept != np.arange(len(kept))
    wrong = removed & (base[kept] != base)
    # A cluster holding two bases: every member of it is wrongly merged, originals included.
    cluster_bases: dict[int, set] = {}
    for c, b in zip(kept.tolist(), base.tolist()):
        cluster_bases.setdefault(c, set()).add(b)
    clean = np.array([len(cluster_bases[c]) == 1 for c in kept.tolist()])
    cats = [d.category for d in corpus.docs]
    is_original = np.array([c == "original" for c in cats])
    found_all = np.where(is_original, clean, same_cluster_as_original)
    out: dict[str, Score] = {}
    for cat in sorted(set(cats), key=_category_order) + ["all"]:
        m = np.ones(len(cats), bool) if cat == "all" else np.array([c == cat for c in cats])
        found = found_all[m]
        out[cat] = Score(cat, int(m.sum()), int(found.sum()), int(removed[m].sum()), int(wrong[m].sum()))
    return out


def resolve_corpus(corpus: LabelledCorpus, token_ids: Sequence[np.ndarray] | None = None,
                   params: MinHashParams | None = DEFAULT_PARAMS, normalization: str | None = DEFAULT_NORMALIZATION,
                   priority: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate the corpus as a run would: exact keys under ``normalization`` (None: no exact
    stage), near duplicates from ``token_ids`` (EOS last) under ``params`` (None: no near stage).
    Returns ``clusters.resolve``'s ``(kept, kind)``."""
    refs = corpus.refs()
    order = keep_order([r.source for r in refs], np.array([r.doc_hash for r in refs], np.uint64),
                       np.array([r.part for r in refs]), np.array([r.row for r in refs]), priority)
    keys = content_keys(corpus.texts(), normalization) if normalization else None
    pairs = None
    if params is not None:
        if token_ids is None:
            raise ValueError("near deduplication needs the documents' token ids")
        sigs = signatures(token_ids, params)
        pairs = candidate_pairs(band_matrix(sigs, params), order, valid=~(sigs == EMPTY).all(axis=1))
        if params.threshold is not None:
            pairs = verify_pairs(pairs, sigs, params.threshold)
    return resolve(order, keys, pairs)
