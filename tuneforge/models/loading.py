"""The one place that loads models and tokenizers, and decides device and dtype."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.errors import ConfigError


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(device: str) -> torch.dtype:
    """bf16 where the hardware has it (CUDA); fp32 on CPU, where bf16 matmuls are many times slower."""
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(path: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"cannot load a tokenizer from {path}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    except OSError as exc:
        raise ConfigError(f"cannot load a model from {path}: {exc}") from None
    return model.to(device)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends an assistant turn: the generation config's eos ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def context_length(model_or_config) -> int | None:
    config = getattr(model_or_config, "config", model_or_config)
    config = getattr(config, "text_config", config)
    return getattr(config, "max_position_embeddings", None)
