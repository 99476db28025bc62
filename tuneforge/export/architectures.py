"""The architectures we write as GGUF, and what differs between them on the way to llama.cpp.

What each one needs, as llama.cpp's own converter does it (vendor/llama.cpp/conversion/llama.py, gemma.py):
- llama (SmolLM2, Llama, Mistral): q_proj and k_proj rows are permuted, because llama.cpp's RoPE pairs
  dimensions (i, i+1) where Hugging Face's rotates halves (i, i+d/2). A file without the permute loads and
  answers garbage.
- gemma3 (the Gemma 3 text models): no permute (llama.cpp uses the NeoX rotation for it), and every norm
  weight gains 1: Hugging Face stores `w` and computes `x * (1 + w)`, llama.cpp computes `x * w`.
Anything else is refused with the way out (`--format hf`, then llama.cpp's convert_hf_to_gguf.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gguf
import torch

from tuneforge.errors import UserError

CONVERTER_HINT = ("write a merged Hugging Face folder with `tuneforge export MODEL --format hf --out DIR` and "
                  "convert it with llama.cpp's convert_hf_to_gguf.py")


@dataclass(frozen=True)
class Architecture:
    gguf_arch: gguf.MODEL_ARCH
    permute_qk: bool
    norm_shift: float
    write_hparams: Callable[[gguf.GGUFWriter, dict[str, Any]], None]

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def tensor_name(self, hf_name: str, config: dict[str, Any]) -> str:
        """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`, by the gguf package's tables."""
        names = gguf.get_tensor_name_map(self.gguf_arch, config["num_hidden_layers"])
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"the tensor {hf_name} has no place in a {self.name} GGUF: {CONVERTER_HINT}")
        return name

    def transform(self, hf_name: str, tensor: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
        """A model tensor as llama.cpp computes with it (see the module docstring)."""
        if self.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return permute_rows(tensor, config["num_attention_heads"])
        if self.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return permute_rows(tensor, _kv_heads(config))
        if self.norm_shift and hf_name.endswith("norm.weight"):
            return tensor + self.norm_shift
        return tensor

    def permute_lora_b(self, hf_module: str, b: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
        """A LoRA B (rows = the layer's outputs) permuted as the layer's weight is: P(W + BA) = PW + (PB)A."""
        if self.permute_qk and hf_module.endswith("q_proj"):
            return permute_rows(b, config["num_attention_heads"])
        if self.permute_qk and hf_module.endswith("k_proj"):
            return permute_rows(b, _kv_heads(config))
        return b


def permute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's LlamaModel.permute: within each head, rows (0..d/2, d/2..d) interleave to (0, d/2, 1, ...)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _kv_heads(config: dict[str, Any]) -> int:
    return config.get("num_key_value_heads") or config["num_attention_heads"]


def _head_dim(config: dict[str, Any]) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _common(w: gguf.GGUFWriter, c: dict[str, Any]) -> None:
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(_kv_heads(c))
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_key_length(_head_dim(c))
    w.add_value_length(_head_dim(c))


def _rope(w: gguf.GGUFWriter, rope: dict[str, Any]) -> None:
    """RoPE's base, and its scaling where llama.cpp reads it from metadata alone."""
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif kind != "default":
        raise UserError(f"RoPE scaling '{kind}' is not written by this exporter: {CONVERTER_HINT}")
    if "rope_theta" in rope:
        w.add_rope_freq_base(rope["rope_theta"])


def _rope_parameters(c: dict[str, Any]) -> dict[str, Any]:
    rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    if "rope_theta" in c:
        rope.setdefault("rope_theta", c["rope_theta"])
    return rope


def _llama_hparams(w: gguf.GGUFWriter, c: dict[str, Any]) -> None:
    _common(w, c)
    _rope(w, _rope_parameters(c))
    w.add_vocab_size(c["vocab_size"])
    w.add_rope_dimension_count(_head_dim(c))


def _gemma3_hparams(w: gguf.GGUFWriter, c: dict[str, Any]) -> None:
    _common(w, c)
    rope = _rope_parameters(c)
    _rope(w, rope.get("full_attention", rope))
    if "sliding_attention" in rope:
        w.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
    if c.get("sliding_window"):
        w.add_sliding_window(c["sliding_window"])
        if c.get("layer_types"):
            w.add_sliding_window_pattern([t == "sliding_attention" for t in c["layer_types"]])
    if c.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(c["final_logit_softcapping"])


LLAMA = Architecture(gguf.MODEL_ARCH.LLAMA, permute_qk=True, norm_shift=0.0, write_hparams=_llama_hparams)
GEMMA3 = Architecture(gguf.MODEL_ARCH.GEMMA3, permute_qk=False, norm_shift=1.0, write_hparams=_gemma3_hparams)

# Hugging Face's model_type -> what we write
SUPPORTED: dict[str, Architecture] = {"llama": LLAMA, "mistral": LLAMA, "gemma3_text": GEMMA3}


def for_config(config: dict[str, Any]) -> Architecture:
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        raise UserError(f"'{kind}' models are not exported to GGUF here (supported: {', '.join(SUPPORTED)}): "
                        f"{CONVERTER_HINT}")
    return SUPPORTED[kind]
