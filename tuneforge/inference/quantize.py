"""Weight-only low-bit linear layers for serving on a CPU: fewer bytes read per token.

Decoding one sequence reads every weight once per token, so on a CPU its speed is set by memory bandwidth:
float32 weights cap a 135M model at a few dozen tokens/s where llama.cpp, reading 4-bit weights, goes
several times faster. Two modes, both with torch's own CPU kernels (no compiler needed):

- `fp16`: weights stored in half precision, math in float32 (fbgemm's `linear_dynamic_fp16`). Half the
  bytes; on the bundled tasks the answers are the same as float32's (docs/benchmarks.md).
- `int4`: weights in 4 bits, groups of 32 along the input with a scale and a zero point each (the layout of
  llama.cpp's Q4_1), for calls of up to `INT4_MAX_ROWS` tokens (`_weight_int4pack_mm_for_cpu`, bfloat16
  activations). Larger calls (many sequences, prompts) are bound by compute rather than bytes, and that
  kernel is slow for them, so they use a 16-bit copy: bfloat16 through oneDNN where this CPU multiplies
  bfloat16 natively (AVX512-BF16, AMX: twice fp16's speed at 16 rows on a Zen 4), else fbgemm's fp16. Which
  one is measured when the model is quantized (`large_call_kind`), not assumed: on a CPU without native
  bfloat16 oneDNN emulates it, much slower. The 4-bit kernel takes bfloat16 activations, scales and zero
  points, so even weights on the 4-bit grid (the bundled SmolLM2, converted from a Q4_1 GGUF) come out within
  ~1-3% of float32 (the bfloat16 copy: ~0.4%), and other weights lose what 4 bits lose; on the bundled tasks
  the answers did not change (docs/benchmarks.md).

Activations, norms, attention and the KV cache stay float32. Every linear layer of the model is replaced,
the LM head included; LoRA adapters are applied on top (multi_lora wraps whatever linear layer it finds).
"""

from __future__ import annotations

import statistics
import time

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


class Int4Linear(nn.Module):
    def __init__(self, linear: nn.Linear, large: str = "fp16"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
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
        self.large = large
        if large == "bf16":
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16), None)
        else:
            self.packed = torch.ops.quantized.linear_prepack_fp16(w, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] <= INT4_MAX_ROWS:
            y = torch._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), self.weight4, INT4_GROUP, self.scales)
        elif self.large == "bf16":
            y = torch.ops.mkldnn._linear_pointwise(flat.to(torch.bfloat16), self.packed, None, "none", [None], "")
        else:
            return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)  # the bias is packed with it
        y = y.float()
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.out_features)


def large_call_kind(shape: tuple[int, int], rows: int = 16, runs: int = 5) -> str:
    """"bf16" if oneDNN's bfloat16 linear layer beats fbgemm's fp16 one on this CPU for a call of `rows`
    rows through a weight of `shape` (out, in), else "fp16". Times a few calls of each (a few ms)."""
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "fp16"
    w, x = torch.randn(shape) * 0.02, torch.randn(rows, shape[1])
    fp16 = torch.ops.quantized.linear_prepack_fp16(w, None)
    bf16 = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16), None)
    calls = {
        "fp16": lambda: torch.ops.quantized.linear_dynamic_fp16(x, fp16),
        "bf16": lambda: torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), bf16, None, "none", [None], "")
        .float(),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(2 + runs):  # two warm-up rounds, alternating, so drift weighs on both
        for kind, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= 2:
                times[kind].append(time.perf_counter() - start)
    return min(times, key=lambda k: statistics.median(times[k]))


def apply(model: nn.Module, mode: str) -> int:
    """Replace the model's linear layers in place; how many were replaced."""
    if mode not in MODES:
        raise UserError(f"unknown quantization {mode!r}: use one of {', '.join(MODES)}")
    if next(model.parameters()).device.type != "cpu":
        raise UserError("--quantize is for serving on a CPU; on a GPU serve with vLLM (--backend vllm)")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    large = "fp16"
    if mode == "int4" and targets:
        head = getattr(model, "get_output_embeddings", lambda: None)()
        biggest = max((m for _, m in targets if m is not head), key=lambda m: m.weight.numel(), default=head)
        large = large_call_kind(tuple(biggest.weight.shape))
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _replace(mode, linear, large))
    return len(targets)


def _replace(mode: str, linear: nn.Linear, large: str) -> nn.Module:
    """The low-bit layer; fp16 where the 4-bit kernel does not take the shape (it wants whole groups)."""
    if mode == "int4" and linear.in_features % INT4_GROUP == 0:
        try:
            return Int4Linear(linear, large)
        except RuntimeError:
            pass
    return Fp16Linear(linear)
