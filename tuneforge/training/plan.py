"""The data plan: which examples each optimizer step sees, and how they are packed into rows.

Pure functions of (example lengths, batch size, epochs, seed), so a resumed run replays the exact same
order from any step, and every process of a distributed run derives the same plan without talking.

Packing puts several short examples in one row; each example keeps its own position ids (0, 1, 2, ...),
from which transformers builds a block-diagonal causal mask, so no example attends to another.

Prefix sharing: when a step's examples all start with the same tokens (typically one long system prompt),
a row holds that prefix once, followed by each example's remainder; a block mask lets every remainder attend
to the prefix and to itself. Under causal attention the prefix's hidden states do not depend on what follows,
so this computes exactly the same losses and gradients as separate copies, with fewer tokens.
"""

from __future__ import annotations

import math
import random

import torch

from tuneforge.data.render import IGNORE, Encoded

# `--epochs auto`: aim to show the model about this many examples in all, within these epoch bounds.
AUTO_TARGET_EXAMPLES = 320
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 1, 10


def auto_epochs(num_examples: int) -> int:
    """Epochs for `--epochs auto`: enough passes to see ~320 examples (rounded), between 1 and 10 passes.

    32 examples get 10 epochs, 100 get 3, 200 get 2, and 214 or more get one (`tuneforge demo` and
    bench/unseen_task.py show what the default reaches).
    """
    if num_examples <= 0:
        return AUTO_MIN_EPOCHS
    epochs = int(AUTO_TARGET_EXAMPLES / num_examples + 0.5)
    return max(AUTO_MIN_EPOCHS, min(AUTO_MAX_EPOCHS, epochs))


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


MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a custom mask


def first_label(example: Encoded) -> int:
    return next((i for i, t in enumerate(example.labels) if t != IGNORE), len(example.labels))


def shared_prefix(examples: list[Encoded]) -> int:
    """Length of the token prefix all examples share, ending before any token that carries loss.

    It stops one token before the first labelled one: the logit there predicts a token that may differ per
    example, so that position must stay in each example's own part.
    """
    limit = min(min(first_label(e) for e in examples) - 1, *(len(e.input_ids) for e in examples))
    first = examples[0].input_ids
    p = 0
    while p < limit and all(e.input_ids[p] == first[p] for e in examples[1:]):
        p += 1
    return p


def build_rows(examples: list[Encoded], capacity: int, share_prefix: bool = True) -> list[dict[str, torch.Tensor]]:
    """A step's examples as model inputs: packed rows (capacity > 0), else one example per row."""
    if capacity <= 0:
        return [collate([e]) for e in examples]
    p = shared_prefix(examples) if share_prefix and len(examples) > 1 else 0
    lengths = [len(e.input_ids) - p for e in examples]
    rows = pack(list(range(len(examples))), lengths, max(capacity - p, max(lengths)))
    if p < MIN_SHARED_PREFIX:
        return [collate([examples[i] for i in row]) for row in rows]
    return [collate_shared(p, [examples[i] for i in row]) for row in rows]


def collate_shared(p: int, examples: list[Encoded]) -> dict[str, torch.Tensor]:
    """One row of a shared prefix (length p) and each example's remainder, with the block mask that isolates them."""
    ids, pos, labels = list(examples[0].input_ids[:p]), list(range(p)), [IGNORE] * p
    spans = []
    for ex in examples:
        start = len(ids)
        ids += ex.input_ids[p:]
        pos += range(p, len(ex.input_ids))
        labels += ex.labels[p:]
        spans.append((start, len(ids)))
    n = len(ids)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:, :p] = True
    for a, b in spans:
        mask[a:b, a:b] = True
    mask &= torch.ones(n, n, dtype=torch.bool).tril()
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "labels": torch.tensor([labels]),
        "attention_mask": mask[None, None],
        "prefix_length": p,  # what varlen attention needs instead of the mask (training/varlen.py)
    }


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


def step_trained_tokens(step: list[int], examples: list[Encoded]) -> int:
    """Tokens that carry loss in a step: what the step's loss is averaged over."""
    return sum(examples[i].num_trained for i in step)


def within_budget(steps: list[list[int]], lengths: list[int], budget: int | None) -> list[list[int]]:
    """The plan's first steps, up to the one whose tokens reach `budget` (all of them when it is None).

    >>> within_budget([[0], [1], [2]], [5, 5, 5], 7)
    [[0], [1]]
    """
    if budget is None:
        return steps
    total = 0
    for n, step in enumerate(steps):
        total += sum(lengths[i] for i in step)
        if total >= budget:
            return steps[: n + 1]
    return steps


def total_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(num_examples / batch_size)
