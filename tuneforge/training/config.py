"""The fine-tuning configuration: one pydantic model whose descriptions feed the CLI help and the API docs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}


class TrainConfig(BaseModel):
    # --- what to train
    model: str = Field(description="Base model: a registry name, an HF model folder, an adapter folder or hub id.")
    data: Path = Field(description="Training file: OpenAI chat fine-tuning JSONL.")
    validation: Path | None = Field(None, description="Validation file (same format): its loss is tracked.")
    out: Path = Field(description="Output folder: adapter (or model), checkpoints, metrics.jsonl, manifest.json.")
    method: Literal["lora", "full"] = Field("lora", description="LoRA adapter on all linear layers, or all weights.")

    # --- optimization
    epochs: int | Literal["auto"] = Field("auto", description="Passes over the data; auto: ~320 examples, 1-10.")
    learning_rate: float | None = Field(None, description="Peak learning rate; default 1e-3 (LoRA), 5e-5 (full).")
    batch_size: int = Field(4, ge=1, description="Examples per optimizer step (across all processes).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup, then cosine decay.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for initialization and data order.")

    # --- LoRA
    lora_rank: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int | None = Field(None, description="LoRA alpha; default 2 x rank.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA path.")

    # --- sequences
    max_length: int = Field(2048, ge=16, description="Examples longer than this many tokens are truncated.")
    packing: bool = Field(True, description="Pack short examples into shared rows (no attention across examples).")
    pack_tokens: int | None = Field(None, description="Tokens per packed row; default 512 on CPU, 4096 on GPU.")

    # --- bookkeeping
    checkpoint_every: int = Field(50, ge=1, description="Write a resumable checkpoint every N steps (and at the end).")
    eval_every: int = Field(25, ge=1, description="Validation loss every N steps (and at the end).")
    keep_checkpoints: int = Field(3, ge=1, description="Keep the newest N step checkpoints.")
    skip_invalid: bool = Field(False, description="Skip invalid rows instead of refusing the file.")
    resume: bool = Field(False, description="Continue from the newest checkpoint in the output folder.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Experiment trackers to log metrics to (where installed)."
    )

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]

    def alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank
