"""Packed rows through one fused variable-length attention call on CUDA, instead of SDPA with a row-sized mask.

A packed row's restarting position ids make transformers build a block-causal [L, L] mask, and SDPA given a
mask cannot use its flash kernel: it computes every (query, key) pair of the row, and copies the key/value heads
of grouped-query models. Here a plain packed row also carries where each example starts (`cu_seq_lens_*`,
computed on the CPU when the row is made) and the model's attention function is ours (`NAME`): given those
boundaries it attends within each example only, on CUDA through PyTorch's own FlashAttention varlen kernel
(`torch.nn.attention.varlen.varlen_attn`: no extra package), elsewhere through one causal SDPA call per example
(the same result; what the CPU test compares with the reference path). A shared-prefix row (plan.collate_shared)
goes the same way without its 4-D mask: the prefix is the first example's start, and each later example reads
the prefix's keys and values (gathered per layer, not recomputed) before its own, causal aligned at the end:
the mask's pattern. A call without boundaries (evaluation rows, other masks, generation) is exactly SDPA's, its
mask built as for SDPA.

`applies` decides by device: CUDA with that kernel, and a model without sliding windows whose attention goes
through transformers' AttentionInterface. CPU training is unchanged. Not yet run on a GPU: bench/gpu_check.py's
`equal` stage compares it there with the masked path.
"""

from __future__ import annotations

import inspect
from itertools import accumulate

import torch
import torch.nn.functional as F

NAME = "tuneforge_varlen"
KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "tuneforge_kv_index")
NO_MASK = torch.ones(1, 1, 0, 0, dtype=torch.bool)  # what a row with boundaries passes as its attention mask


def _kernel():
    """PyTorch's FlashAttention varlen function, where this torch has one (2.10 and later)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def register() -> None:
    """Make `NAME` a transformers attention implementation (our function; SDPA's masks for calls without
    boundaries). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def applies(model, device: str) -> bool:
    """Whether packed rows should go through varlen attention: CUDA (sm80+, for the FlashAttention kernel) with
    the kernel in torch, and a model whose attention is pluggable, without sliding-window layers or attention
    dropout."""
    if not device.startswith("cuda") or _kernel() is None or torch.cuda.get_device_capability() < (8, 0):
        return False
    base = _base(model)
    config = getattr(base.config, "text_config", base.config)
    return (bool(getattr(base, "_supports_attention_backend", False)) and not getattr(config, "sliding_window", None)
            and not getattr(config, "attention_dropout", 0))


def use(model) -> None:
    """Switch `model` (a PEFT wrapper or a transformers model) to varlen attention."""
    register()
    _base(model).set_attn_implementation(NAME)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def with_boundaries(row: dict) -> dict:
    """A packed row (plan.collate) or shared-prefix row (plan.collate_shared) with its examples' boundaries instead
    of its mask. Rows with any other mask are returned as they are (they stay on SDPA)."""
    if row["position_ids"].shape[0] != 1 or ("attention_mask" in row and "prefix_length" not in row):
        return row
    p, pos = row.get("prefix_length", 0), row["position_ids"][0]
    starts = [0, *(torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1).tolist()]
    ends = [*starts[1:], len(pos)]
    if pos[0] != 0 or any(pos[a] != p for a in starts[1:]):
        return row  # not the layout plan.collate / plan.collate_shared make
    # the first example holds the prefix itself; each later one reads the prefix, then itself
    blocks = [(0, ends[0], 0, 0), *((a, b, 0, p) for a, b in zip(starts[1:], ends[1:]))]
    return {**row, **boundaries(blocks)}


def boundaries(blocks: list[tuple[int, int, int, int]]) -> dict:
    """The model inputs that give a row the attention `blocks` describe: each (q0, q1, k0, k1) says that the
    queries q0:q1 attend to the keys k0:k1 (a prefix, maybe empty) and then causally to their own (q0:q1). The
    query ranges, in order, make up the whole row. The mask is a placeholder: an empty 4-D mask is passed through
    by transformers as it is, where it would otherwise build an [L, L] one for these calls."""
    blocks = [b for b in blocks if b[1] > b[0]]
    assert [b[0] for b in blocks[1:]] == [b[1] for b in blocks[:-1]] and blocks[0][0] == 0, "query ranges in order"
    q_lens = [q1 - q0 for q0, q1, _, _ in blocks]
    k_lens = [k1 - k0 + q1 - q0 for q0, q1, k0, k1 in blocks]
    out = {"cu_seq_lens_q": _cumulative(q_lens), "cu_seq_lens_k": _cumulative(k_lens),
           "max_length_q": max(q_lens), "max_length_k": max(k_lens), "attention_mask": NO_MASK}
    if any(k1 > k0 for _, _, k0, k1 in blocks):
        out["tuneforge_kv_index"] = torch.cat([torch.cat([torch.arange(k0, k1), torch.arange(q0, q1)])
                                               for q0, q1, k0, k1 in blocks])
    return out


def _cumulative(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0, *accumulate(lengths)], dtype=torch.int32)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, tuneforge_kv_index=None,
              **kwargs):
    """transformers' attention interface: query [1, H, T, D], key/value [1, Hkv, T, D] -> ([1, T, H, D], None).
    With boundaries, each example's queries attend causally (aligned at the end) to its keys: its own tokens, after
    the prefix's where `tuneforge_kv_index` gathers them; without, SDPA."""
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout or query.shape[0] != 1 or query.shape[2] != key.shape[2]:  # `applies` rules these out
        raise RuntimeError("varlen attention takes one row, no cache and no attention dropout")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, heads, D]
    if tuneforge_kv_index is not None:
        k, v = k.index_select(0, tuneforge_kv_index), v.index_select(0, tuneforge_kv_index)
    fused = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _kernel() is not None
    if fused:
        out = fused_attention(_kernel(), q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, scaling)
    else:
        out = per_example_attention(q, k, v, cu_seq_lens_q, cu_seq_lens_k, scaling)
    return out.unsqueeze(0), None


def fused_attention(kernel, q, k, v, cu_q, cu_k, max_q: int, max_k: int, scale: float | None) -> torch.Tensor:
    """Causal attention within each example, one kernel call, for either signature torch has had: causal as
    `is_causal=True` (2.10) or as `window_size=(-1, 0)` (2.12 and later, which also take `scale` and
    `enable_gqa`)."""
    params = inspect.signature(kernel).parameters
    kw = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if scale is not None and "scale" in params:
        kw["scale"] = scale
    elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-12:
        return per_example_attention(q, k, v, cu_q, cu_k, scale)  # this kernel only knows the default scale
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return kernel(q, k, v, cu_q, cu_k, int(max_q), int(max_k), **kw)


def per_example_attention(q, k, v, cu_q, cu_k, scale: float | None) -> torch.Tensor:
    """The same as the fused kernel, one SDPA call per example ([T, heads, D] in and out); causal aligned at the
    end when an example reads more keys than it has queries (the prefix's), as FlashAttention aligns it."""
    gqa = k.shape[1] != q.shape[1]
    outs = []
    qb, kb = cu_q.tolist(), cu_k.tolist()
    for q0, q1, k0, k1 in zip(qb[:-1], qb[1:], kb[:-1], kb[1:]):
        lq, lk = q1 - q0, k1 - k0
        mask = None if lq == lk else torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        qs, ks, vs = q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1)
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, is_causal=mask is None, scale=scale,
                                                   enable_gqa=gqa).transpose(0, 1))
    return torch.cat(outs)
