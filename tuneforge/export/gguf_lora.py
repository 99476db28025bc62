"""A PEFT LoRA adapter alone as a GGUF LoRA, which llama.cpp (`--lora`) and Ollama (`ADAPTER`) apply to the
base's GGUF at load time.

The layout llama.cpp reads (llama-adapter.cpp; convert_lora_to_gguf.py writes the same): general.type
`adapter`, adapter.type `lora`, one adapter.lora.alpha, and per adapted layer `<tensor>.lora_a` (PEFT's A,
[rank, in]) and `<tensor>.lora_b` (PEFT's B, [out, rank]). llama.cpp scales by alpha / rank, rank read from
the tensors. PEFT scales by alpha / rank too, or alpha / sqrt(rank) with rsLoRA, and a module may have its
own alpha (alpha_pattern): we write alpha (times sqrt(rank) for rsLoRA) and fold whatever differs per module
into B, which for a plain adapter leaves B as it is. B's rows are permuted where the base's weight is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from tuneforge.errors import UserError
from tuneforge.export.architectures import for_config
from tuneforge.export.gguf import write_file

DTYPES = {"f16": np.float16, "f32": np.float32}
MERGE_HINT = "export the model with the adapter merged instead (--format gguf)"


def write_lora(adapter: Path, base_config: dict[str, Any], out: Path, dtype: str = "f16", name: str = "") -> Path:
    """Write the adapter folder `adapter` (adapter_config.json + weights) as a GGUF LoRA for its base."""
    if dtype not in DTYPES:
        raise UserError(f"a GGUF LoRA is written in {' or '.join(DTYPES)}, not {dtype}")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    _check_supported(cfg)
    arch = for_config(base_config)
    rslora = bool(cfg.get("use_rslora"))
    rank = cfg["r"]
    alpha = cfg["lora_alpha"] * (math.sqrt(rank) if rslora else 1.0)

    writer = gguf.GGUFWriter(None, arch.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name or adapter.name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for module, (a, b) in sorted(pairs(load_weights(adapter)).items()):
        r = a.shape[0]
        module_alpha = cfg.get("alpha_pattern", {}).get(_pattern_key(cfg, module), cfg["lora_alpha"])
        peft_scale = module_alpha / (math.sqrt(r) if rslora else r)
        b = arch.permute_lora_b(module, b.float() * (peft_scale * r / alpha), base_config)
        target = arch.tensor_name(module + ".weight", base_config)
        writer.add_tensor(target + ".lora_a", a.float().numpy().astype(DTYPES[dtype]))
        writer.add_tensor(target + ".lora_b", b.numpy().astype(DTYPES[dtype]))
    return write_file(writer, out)


def load_weights(adapter: Path) -> dict[str, torch.Tensor]:
    if (adapter / "adapter_model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(adapter / "adapter_model.safetensors")
    if (adapter / "adapter_model.bin").exists():
        return torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)
    raise UserError(f"{adapter} has no adapter_model.safetensors (or .bin): is it a PEFT adapter folder?")


def pairs(weights: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT's saved names -> {base module name: (A, B)}: `base_model.model.model.layers.0.self_attn.q_proj.
    lora_A.weight` is A of `model.layers.0.self_attn.q_proj`."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise UserError(f"the adapter's tensor {key} is not a LoRA A or B of a linear layer: {MERGE_HINT}")
        found.setdefault(module, {})[part[0]] = tensor
    if any(len(ab) != 2 for ab in found.values()):
        raise UserError(f"the adapter has an A without its B (or a B without its A): {MERGE_HINT}")
    return {module: (ab["A"], ab["B"]) for module, ab in found.items()}


def _check_supported(cfg: dict[str, Any]) -> None:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise UserError(f"a {cfg['peft_type']} adapter is not a LoRA: {MERGE_HINT}")
    if cfg.get("use_dora"):
        raise UserError(f"a DoRA adapter has no GGUF LoRA form: {MERGE_HINT}")
    if cfg.get("modules_to_save") or cfg.get("bias", "none") != "none":
        raise UserError(f"the adapter also trains whole modules or biases, which a GGUF LoRA cannot carry: "
                        f"{MERGE_HINT}")


def _pattern_key(cfg: dict[str, Any], module: str) -> str:
    from peft.utils.other import get_pattern_key

    return get_pattern_key(list(cfg.get("alpha_pattern") or {}), module)
