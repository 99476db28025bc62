"""Packed rows through one fused variable-length attention call on CUDA, instead of SDPA with a row-sized mask.

A packed row's restarting position ids make transformers build a block-causal [L, L] mask, and SDPA given a
mask cannot use its flash kernel: it computes every (query, key) pair of the row, and copies the key/value heads
of grouped-query models. Here a plain packed row also carries where each example starts (`cu_seq_lens_*`,
computed on the CPU when the row is made) and the model's attention function is ours (`NAME`): given those
boundaries it attends within each example only, on CUDA through PyTorch's own FlashAttention varlen kernel
(`torch.nn.attention.varlen.varlen_attn`: no extra package), elsewhere through one causal SDPA call per example
(the same result; what the CPU test compares with the reference path). A call without boundaries (evaluation
rows, shared-prefix rows' 4-D masks, generation) is exactly SDPA's, its mask built as for SDPA.

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
KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


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
    the kernel in torch, and a model whose attention is pluggable and has no sliding-window layers."""
    if not device.startswith("cuda") or _kernel() is None or torch.cuda.get_device_capability() < (8, 0):
        return False
    base = _base(model)
    config = getattr(base.config, "text_config", base.config)
    return bool(getattr(base, "_supports_attention_backend", False)) and not getattr(config, "sliding_window", None)


def use(model) -> None:
    """Switch `model` (a PEFT wrapper or a transformers model) to varlen attention."""
    register()
    _base(model).set_attn_implementation(NAME)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def with_boundaries(row: dict[str, torch.Tensor]) -> dict:
    """A plain packed row (position ids restarting at 0 for each example, no mask) with its examples' boundaries;
    any other row as it is."""
    if "attention_mask" in row or row["position_ids"].shape[0] != 1:
        return row
    pos = row["position_ids"][0]
    starts = torch.nonzero(pos == 0).flatten().tolist()
    lengths = [b - a for a, b in zip(starts, [*starts[1:], len(pos)])]
    cu = torch.tensor([0, *accumulate(lengths)], dtype=torch.int32)
    return {**row, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max(lengths), "max_length_k": max(lengths)}


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """transformers' attention interface: query [1, H, T, D], key/value [1, Hkv, T, D] -> ([1, T, H, D], None)."""
    if cu_seq_lens_q is None or dropout or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, heads, D]
    fused = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _kernel() is not None
    if fused:
        out = fused_attention(_kernel(), q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, scaling)
    else:
        out = per_example_attention(q, k, v, cu_seq_lens_q, scaling)
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
        return per_example_attention(q, k, v, cu_q, scale)  # this kernel only knows the default scale
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return kernel(q, k, v, cu_q, cu_k, int(max_q), int(max_k), **kw)


def per_example_attention(q, k, v, cu, scale: float | None) -> torch.Tensor:
    """The same as the fused kernel, one causal SDPA call per example ([T, heads, D] in and out)."""
    gqa = k.shape[1] != q.shape[1]
    outs = []
    bounds = cu.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa)
                    .transpose(0, 1))
    return torch.cat(outs)
