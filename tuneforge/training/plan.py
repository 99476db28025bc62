"""The data plan: which examples each optimizer step sees, and how they are packed into rows.

Pure functions of (example lengths, batch size, epochs, seed), so a resumed run replays the exact same
order from any step, and every process of a distributed run derives the same plan without talking.

Packing puts several short examples in one row; each example keeps its own position ids (0, 1, 2, ...),
from which transformers builds a block-diagonal causal mask, so no example attends to another.
"""

from __future__ import annotations

import math
import random

import torch

from tuneforge.data.render import IGNORE, Encoded

# `--epochs auto`: aim to show the model about this many examples in all, within these epoch bounds.
AUTO_TARGET_EXAMPLES = 800
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 1, 10


def auto_epochs(num_examples: int) -> int:
    """Epochs for `--epochs auto`: enough passes to see ~800 examples, between 1 and 10 passes.

    Small data sets get several passes (100 examples -> 8 epochs); a few hundred get two or three
    (300 -> 3); a thousand or more get one.
    """
    if num_examples <= 0:
        return AUTO_MIN_EPOCHS
    return max(AUTO_MIN_EPOCHS, min(AUTO_MAX_EPOCHS, round(AUTO_TARGET_EXAMPLES / num_examples)))


def plan_steps(num_examples: int, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """Example indices of every optimizer step: each epoch a fresh shuffle, cut into batches.

    A last short batch of an epoch is kept (no example is dropped).
    """
    steps = []
    for epoch in range(epochs):
        order = list(range(num_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        steps += [order[i : i + batch_size] for i in range(0, num_examples, batch_size)]
    return steps


def pack(indices: list[int], lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group examples into rows of at most `capacity` tokens (longer ones alone)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def row_capacity(lengths: list[int], pack_tokens: int) -> int:
    """Row length for packing: the longest example fits in a row alone."""
    return max(pack_tokens, max(lengths, default=1))


def collate(examples: list[Encoded]) -> dict[str, torch.Tensor]:
    """One packed row as model inputs: ids, per-example position ids, and labels, shape [1, L]."""
    ids, pos, labels = [], [], []
    for ex in examples:
        ids += ex.input_ids
        pos += range(len(ex.input_ids))
        labels += ex.labels
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "labels": torch.tensor([labels]),
    }


def collate_rows(rows: list[list[Encoded]]) -> dict[str, torch.Tensor]:
    """Several packed rows as one batch, right-padded.

    The padding sits after every real token and forms an example of its own (its positions restart at 0),
    so under causal, per-example attention no real token sees it, and no attention mask is needed.
    """
    parts = [collate(r) for r in rows]
    width = max(p["input_ids"].shape[1] for p in parts)
    out = {k: [] for k in ("input_ids", "position_ids", "labels")}
    for p in parts:
        pad = width - p["input_ids"].shape[1]
        out["input_ids"].append(torch.nn.functional.pad(p["input_ids"], (0, pad), value=0))
        out["position_ids"].append(torch.cat([p["position_ids"], torch.arange(pad).unsqueeze(0)], dim=1))
        out["labels"].append(torch.nn.functional.pad(p["labels"], (0, pad), value=IGNORE))
    return {k: torch.cat(v) for k, v in out.items()}


def step_trained_tokens(step: list[int], examples: list[Encoded]) -> int:
    """Tokens that carry loss in a step: what the step's loss is averaged over."""
    return sum(examples[i].num_trained for i in step)


def total_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(num_examples / batch_size)
