"""Sampling and train/test splits as pure functions of a seed, stratified by label when labels are given."""

from __future__ import annotations

import random
from collections import defaultdict


def sample(n: int, k: int | None, seed: int) -> list[int]:
    """k indices out of range(n) at random (all of them when k is None or >= n), in their original order."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def split(n: int, test_fraction: float, seed: int, labels: list[str | None] | None = None) -> list[str]:
    """"train" or "test" for each of n items. With labels, each label's items are split on their own, so
    both sides keep the label mix; every label with two or more items gets at least one on each side."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i in range(n):
        groups[labels[i] if labels else None].append(i)
    rng = random.Random(seed)
    out = ["train"] * n
    for key in sorted(groups, key=str):
        items = groups[key]
        rng.shuffle(items)
        n_test = round(len(items) * test_fraction)
        if labels and len(items) >= 2 and 0 < test_fraction < 1:
            n_test = min(max(n_test, 1), len(items) - 1)
        for i in items[:n_test]:
            out[i] = "test"
    return out
