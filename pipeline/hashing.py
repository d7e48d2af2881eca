"""Stable hashes behind every keep / repeat / order decision.

A decision about copy ``k`` of document ``doc_id`` of ``source`` under ``seed`` is made from
``mix(doc_hash(doc_id) ^ salt(seed, source, purpose, k))``: ``doc_hash`` is computed once, when the
document is cached; ``mix`` is vectorised over numpy arrays, so deciding a billion documents costs
seconds. Nothing depends on Python's ``hash()``, process ids, arrival order or worker count.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["doc_hash", "salt", "mix", "decision_keys", "held_out_purpose", "SELECT", "PLACE"]

SELECT, PLACE = "select", "place"  # domain separation: selection and placement are independent


def held_out_purpose(split: str) -> str:
    """The purpose whose keys pick a held-out split's documents: independent of selection and placement."""
    return f"held_out:{split}"

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def doc_hash(doc_id: str) -> int:
    """64-bit blake2b of a document id (stored in the cache's document table)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def salt(seed: int, source: str, purpose: str, copy: int) -> np.uint64:
    key = f"{seed}\x00{source}\x00{purpose}\x00{copy}".encode("utf-8")
    return np.uint64(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection on uint64 that spreads every input bit over the output."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def decision_keys(doc_hashes: np.ndarray, seed: int, source: str, purpose: str, copy: int) -> np.ndarray:
    """One uint64 key per document for (seed, source, purpose, copy); uniform over [0, 2**64)."""
    return mix(np.asarray(doc_hashes, dtype=np.uint64) ^ salt(seed, source, purpose, copy))
