"""Preference pairs as model rows, the prompt computed once for its two answers.

A pair (prompt P, chosen C, rejected R) becomes one stretch of a row, `P C R`, with its own attention:

    P attends causally within itself;  C attends to P and causally to itself;  R attends to P and to itself, not C.

Position ids restart for each answer (C and R both continue from len(P)), so every answer token sees exactly the
tokens, at exactly the positions, it would see in its own `P + answer` sequence: under causal attention P's hidden
states do not depend on what follows them, and the results (log-probabilities, gradients) equal two separate
sequences' while P is computed once. Several pairs share a row the same way, each isolated from the others.

The first token of each answer is predicted from P's last position, which both answers share: rather than the
shifted-labels convention, a row carries, for each answer token, the index of the logit that predicts it
(`target_index`, into the logits kept), the token (`target`) and which answer it belongs to (`segment`: pair k's
chosen is 2k, its rejected 2k + 1). Logits are computed only where some answer token is predicted.

Models with sliding-window layers (Gemma 3) take a second mask for those layers: the same block mask, limited to
keys within the window of each query by position, which is what each answer would see in its own sequence.

On CUDA (training/varlen.py) no mask is built: a forward's rows are concatenated into one, and each prompt and
answer is a block of varlen attention, an answer reading its prompt's keys before its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.data.preference import EncodedPair
from tuneforge.training import fused_head, varlen


def collate_pairs(pairs: list[EncodedPair], window: int | None = None,
                  masked: bool = True) -> dict[str, torch.Tensor | dict | int | list]:
    """One row holding `pairs`, with the targets of every answer token, its attention as `blocks` (varlen.boundaries'
    form) and, when `masked`, as a block mask."""
    ids: list[int] = []
    pos: list[int] = []
    blocks: list[tuple[int, int, int, int]] = []  # (query start, query end, prompt start, prompt end)
    sources: list[int] = []  # row index of the logit that predicts each answer token
    target: list[int] = []
    segment: list[int] = []
    for k, pair in enumerate(pairs):
        p0 = len(ids)
        n = len(pair.prompt)
        ids += pair.prompt
        pos += range(n)
        blocks.append((p0, p0 + n, p0, p0))
        for side, answer in enumerate((pair.chosen, pair.rejected)):
            a0 = len(ids)
            ids += answer
            pos += range(n, n + len(answer))
            blocks.append((a0, a0 + len(answer), p0, p0 + n))
            if answer:
                sources += [p0 + n - 1, *range(a0, a0 + len(answer) - 1)]
            target += answer
            segment += [2 * k + side] * len(answer)
    length = len(ids)
    keep = torch.zeros(1, length, dtype=torch.bool)
    keep[0, sources] = True
    kept_index = torch.cumsum(keep[0].long(), 0) - 1  # row index -> index among the kept logits
    row = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "keep": keep,
        "target_index": kept_index[torch.tensor(sources, dtype=torch.long)],
        "target": torch.tensor(target, dtype=torch.long),
        "segment": torch.tensor(segment, dtype=torch.long),
        "pairs": len(pairs),
        "blocks": blocks,
    }
    if not masked:
        return row
    mask = torch.zeros(length, length, dtype=torch.bool)
    for q0, q1, k0, k1 in blocks:
        mask[q0:q1, k0:k1] = True  # an answer sees its prompt
        mask[q0:q1, q0:q1] = True  # and itself (made causal below)
    mask &= torch.ones(length, length, dtype=torch.bool).tril()
    attention = mask[None, None]
    if window:
        p = torch.tensor(pos)
        near = (p[:, None] - p[None, :]) < window
        attention = {"full_attention": attention, "sliding_attention": (mask & near)[None, None]}
    return {**row, "attention_mask": attention}


def pair_logps(model, row: dict, device) -> torch.Tensor:
    """Summed log-probability of each answer of the row's pairs: shape [pairs, 2] (chosen, rejected)."""
    mask = row["attention_mask"]
    mask = {k: v.to(device) for k, v in mask.items()} if isinstance(mask, dict) else mask.to(device)
    inputs = {"input_ids": row["input_ids"].to(device), "position_ids": row["position_ids"].to(device),
              "attention_mask": mask, **{k: _to(row[k], device) for k in varlen.KEYS if k in row}}
    token_logps = fused_head.target_logps(model, inputs, row["keep"].to(device), row["target"].to(device),
                                          row["target_index"].to(device))
    sums = torch.zeros(2 * row["pairs"], device=device, dtype=token_logps.dtype)
    return sums.index_add(0, row["segment"].to(device), token_logps).view(-1, 2)


def stack_rows(rows: list[dict]) -> dict:
    """Rows of different lengths as one batch (padded on the right), so one forward runs them all: on a CPU a
    batch of rows costs about half as much per token as the same rows one at a time. A padding position attends
    only to itself and no real position attends to it, so the results are the rows' own."""
    if len(rows) == 1:
        return rows[0]
    length = max(r["input_ids"].shape[1] for r in rows)

    def pad(t: torch.Tensor, value=0) -> torch.Tensor:
        return F.pad(t, (0, length - t.shape[-1]), value=value)

    def masks(kind: str | None) -> torch.Tensor:
        out = torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1, 1)
        for b, r in enumerate(rows):
            m = r["attention_mask"] if kind is None else r["attention_mask"][kind]
            n = m.shape[-1]
            out[b, 0, :n, :n] = m[0, 0]
        return out

    first = rows[0]["attention_mask"]
    kept = torch.tensor([0] + [int(r["keep"].sum()) for r in rows[:-1]]).cumsum(0)  # flattened row-major
    pairs = torch.tensor([0] + [r["pairs"] for r in rows[:-1]]).cumsum(0)
    return {
        "input_ids": torch.cat([pad(r["input_ids"]) for r in rows]),
        "position_ids": torch.cat([pad(r["position_ids"]) for r in rows]),
        "attention_mask": {k: masks(k) for k in first} if isinstance(first, dict) else masks(None),
        "keep": torch.cat([pad(r["keep"], False) for r in rows]),
        "target_index": torch.cat([r["target_index"] + kept[b] for b, r in enumerate(rows)]),
        "target": torch.cat([r["target"] for r in rows]),
        "segment": torch.cat([r["segment"] + 2 * pairs[b] for b, r in enumerate(rows)]),
        "pairs": sum(r["pairs"] for r in rows),
    }


def varlen_row(rows: list[dict]) -> dict:
    """Rows (collated with `masked=False`) as one row for varlen attention (training/varlen.py): concatenated, not
    padded, each pair attending as its blocks say."""
    offsets = [0, *torch.tensor([r["input_ids"].shape[1] for r in rows]).cumsum(0).tolist()]
    kept = [0, *torch.tensor([int(r["keep"].sum()) for r in rows]).cumsum(0).tolist()]
    pairs = [0, *torch.tensor([r["pairs"] for r in rows]).cumsum(0).tolist()]
    blocks = [(q0 + o, q1 + o, k0 + o, k1 + o) for r, o in zip(rows, offsets) for q0, q1, k0, k1 in r["blocks"]]
    return {
        "input_ids": torch.cat([r["input_ids"] for r in rows], dim=1),
        "position_ids": torch.cat([r["position_ids"] for r in rows], dim=1),
        "keep": torch.cat([r["keep"] for r in rows], dim=1),
        "target_index": torch.cat([r["target_index"] + kept[b] for b, r in enumerate(rows)]),
        "target": torch.cat([r["target"] for r in rows]),
        "segment": torch.cat([r["segment"] + 2 * pairs[b] for b, r in enumerate(rows)]),
        "pairs": pairs[-1],
        **varlen.boundaries(blocks),
    }


def _to(value, device):
    return value.to(device) if torch.is_tensor(value) else value


def batches(rows: list[list[int]], lengths: list[int], max_tokens: int) -> list[list[list[int]]]:
    """Consecutive rows (lists of pair indices) grouped into forwards of at most `max_tokens` padded tokens (a row
    longer than that alone)."""
    out: list[list[list[int]]] = []
    longest = 0
    for row in rows:
        n = sum(lengths[i] for i in row)
        if out and max(longest, n) * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(row)
            longest = max(longest, n)
        else:
            out.append([row])
            longest = n
    return out
