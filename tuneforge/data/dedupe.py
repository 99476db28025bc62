"""Duplicate removal for datasets: exact (same conversation after normalising case and whitespace) and near
(MinHash over word 3-grams with datasketch's LSH index: pairs above a Jaccard threshold count as one).

Both keep the first of a group, so the order of the input decides which copy stays.
"""

from __future__ import annotations

import hashlib
import re

_WORDS = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, whitespace runs as one space."""
    return " ".join(text.lower().split())


def exact_duplicates(texts: list[str]) -> list[int]:
    """Indices of texts that repeat an earlier one (after normalising)."""
    seen: set[bytes] = set()
    dupes = []
    for i, text in enumerate(texts):
        key = hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()
        if key in seen:
            dupes.append(i)
        seen.add(key)
    return dupes


def _shingles(text: str, n: int = 3) -> set[bytes]:
    words = _WORDS.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicates(texts: list[str], threshold: float = 0.8, num_perm: int = 128, seed: int = 1) -> list[int]:
    """Indices of texts whose estimated Jaccard similarity with an earlier kept text is >= threshold."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dupes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(list(_shingles(text)))
        if lsh.query(m):
            dupes.append(i)
        else:
            lsh.insert(str(i), m)
    return dupes
