"""Log-probabilities of the trained tokens without their [tokens, vocabulary] logits: the output layer and the
log-softmax fused, in chunks.

A training loss needs one number per trained token: log p(target | context). The usual way computes the logits of
every kept position over the whole vocabulary, upcasts them to float32 for the softmax, and backward makes a
gradient of the same size: about 12 bytes x vocabulary per token (Llama 3's 128k vocabulary: 1.5 GB per 1,000
trained tokens), the largest tensors of a LoRA step on long answers. Here the model returns its final hidden states
(the output layer swapped for an identity during that forward) and `_TargetLogps` projects them a chunk of positions
at a time: the chunk's logits, their log-sum-exp and, since the output layer is frozen, the gradient of each
position's log-probabilities with respect to its hidden state, `W[target] - softmax(logits) @ W`, of which only
`softmax(logits) @ W` ([positions, hidden]) is kept for backward. Forward and backward together do the two matrix
products of the usual forward and backward, and hold one chunk's logits at a time.

It applies where the output layer is a plain, frozen linear layer and the model does nothing to the logits after it
(no soft-capping, no scaling): LoRA training of the usual decoder models. Elsewhere (full fine-tuning, which trains
the output layer; models that cap or scale their logits) the usual path runs. tests/test_fused_head.py checks that
both give the same log-probabilities and gradients. Liger-Kernel's fused linear cross-entropy does this in Triton on
GPUs; this is plain PyTorch, the same on every device.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_ELEMENTS = 2**24  # logits per chunk (64 MB in float32): positions per chunk = this / vocabulary size
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # config fields that change logits


def target_logps(model, inputs: dict, keep: torch.Tensor, target: torch.Tensor,
                 index: torch.Tensor | None = None) -> torch.Tensor:
    """log p(target[i]) from the logit at kept position index[i] (kept positions in row-major order; `index` None:
    the i-th kept position), for a forward of `model` on `inputs` keeping the positions where `keep` is True."""
    head = frozen_head(model)
    with _hidden_states_out(model, head) if head is not None else contextlib.nullcontext():
        out = model(**inputs, logits_to_keep=keep, use_cache=False)
    kept = out.logits.reshape(-1, out.logits.shape[-1])
    if head is not None:
        index = torch.arange(len(target), device=kept.device) if index is None else index
        return _TargetLogps.apply(kept, head.weight, index, target)
    logits = kept if index is None else kept[index]
    return -F.cross_entropy(logits.float(), target, reduction="none")


def frozen_head(model) -> nn.Linear | None:
    """The model's output layer where the fused path applies to it (see the module's docstring), else None."""
    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    config = getattr(base, "config", None)
    config = getattr(config, "text_config", config)
    if type(head) is not nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    if not any(m is head for m in base.children()):  # (swapped for the forward: it must be the model's own child)
        return None
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_TRANSFORMS):
        return None
    return head


def _unwrap(model):
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _hidden_states_out(model, head: nn.Linear):
    """During the block, the model's output layer is an identity: its `logits` are the kept hidden states."""
    base = _unwrap(model)
    name = next(n for n, m in base.named_children() if m is head)
    setattr(base, name, nn.Identity())
    try:
        yield
    finally:
        setattr(base, name, head)


class _TargetLogps(torch.autograd.Function):
    """hidden [K, H] (kept positions), weight [V, H] (frozen), index [N] (into K), target [N] -> log-probs [N]."""

    @staticmethod
    def forward(ctx, hidden, weight, index, target):
        ctx.dtype = hidden.dtype
        hidden = hidden.to(weight.dtype)
        need_grad = ctx.needs_input_grad[0]
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        expected = torch.empty_like(hidden) if need_grad else None  # softmax(logits) @ W, per kept position
        with torch.autocast(hidden.device.type, enabled=False):
            for a, b in _spans(hidden.shape[0], weight.shape[0]):
                logits = (hidden[a:b] @ weight.T).float()
                lse[a:b] = torch.logsumexp(logits, dim=-1)
                if need_grad:
                    expected[a:b] = torch.exp(logits - lse[a:b, None]).to(weight.dtype) @ weight
            chosen = torch.empty(len(target), dtype=torch.float32, device=hidden.device)
            for a, b in _spans(len(target), weight.shape[1]):
                chosen[a:b] = (hidden[index[a:b]].float() * weight[target[a:b]].float()).sum(-1)
        if need_grad:
            ctx.save_for_backward(weight, index, target, expected)
            ctx.rows = hidden.shape[0]
        return chosen - lse[index]

    @staticmethod
    def backward(ctx, grad):
        weight, index, target, expected = ctx.saved_tensors
        hidden_grad = torch.zeros(ctx.rows, weight.shape[1], dtype=ctx.dtype, device=grad.device)
        for a, b in _spans(len(target), weight.shape[1]):  # d logp / d hidden = W[target] - softmax @ W
            i = index[a:b]
            part = grad[a:b, None].float() * (weight[target[a:b]].float() - expected[i].float())
            hidden_grad.index_add_(0, i, part.to(ctx.dtype))
        return hidden_grad, None, None, None


def _spans(n: int, width: int):
    """(start, end) of chunks of n rows of `width` elements, CHUNK_ELEMENTS at most each."""
    rows = max(1, CHUNK_ELEMENTS // width)
    return ((a, min(a + rows, n)) for a in range(0, n, rows))
