"""Weight-only low-bit linear layers for serving on a CPU: fewer bytes read per token.

Decoding one sequence reads every weight once per token, so on a CPU its speed is set by memory bandwidth:
float32 weights cap a 135M model at a few dozen tokens/s where llama.cpp, reading 4-bit weights, goes
several times faster. Two modes, both with torch's own CPU kernels (no compiler needed):

- `fp16`: weights stored in half precision, math in float32 (fbgemm's `linear_dynamic_fp16`). Half the
  bytes; on the bundled tasks the answers are the same as float32's (docs/benchmarks.md).
- `int4`: weights in 4 bits, groups of 32 along the input with a scale and a zero point each (the layout of
  llama.cpp's Q4_1), for batches of up to `INT4_MAX_ROWS` tokens (`_weight_int4pack_mm_for_cpu`, bfloat16
  activations); larger batches are bound by compute rather than bytes, and that kernel is slow for them, so
  they use an fp16 copy. The kernel takes bfloat16 activations, scales and zero points, so even weights on
  the 4-bit grid (the bundled SmolLM2, converted from a Q4_1 GGUF) come out within ~1-3% of float32, and other
  weights lose what 4 bits lose; on the bundled tasks the answers did not change (docs/benchmarks.md).

Activations, norms, attention and the KV cache stay float32. Every linear layer of the model is replaced,
the LM head included; LoRA adapters are applied on top (multi_lora wraps whatever linear layer it finds).
"""

from __future__ import annotations

import torch
from torch import nn

from tuneforge.errors import UserError

MODES = ("fp16", "int4")
INT4_GROUP = 32
INT4_MAX_ROWS = 2  # measured: beyond this many tokens per call the fp16 kernel is faster


class Fp16Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


class Int4Linear(Fp16Linear):
    def __init__(self, linear: nn.Linear):
        super().__init__(linear)
        w = linear.weight.detach().float()
        out, inp = w.shape
        groups = w.reshape(out, inp // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(-1), groups.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-10)
        q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).reshape(out, inp)
        self.weight4 = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        # the kernel computes (q - 8) * scale + zero
        self.scales = torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() > INT4_MAX_ROWS * self.in_features:
            return super().forward(x)
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int4pack_mm_for_cpu(flat, self.weight4, INT4_GROUP, self.scales).float()
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.out_features)


def apply(model: nn.Module, mode: str) -> int:
    """Replace the model's linear layers in place; how many were replaced."""
    if mode not in MODES:
        raise UserError(f"unknown quantization {mode!r}: use one of {', '.join(MODES)}")
    if next(model.parameters()).device.type != "cpu":
        raise UserError("--quantize is for serving on a CPU; on a GPU serve with vLLM (--backend vllm)")
    cls = Int4Linear if mode == "int4" else Fp16Linear
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _replace(cls, linear))
    return len(targets)


def _replace(cls, linear: nn.Linear) -> nn.Module:
    """The low-bit layer; fp16 where the 4-bit kernel does not take the shape (it wants whole groups)."""
    if cls is Int4Linear and linear.in_features % INT4_GROUP == 0:
        try:
            return Int4Linear(linear)
        except RuntimeError:
            pass
    return Fp16Linear(linear)
