"""The fine-tuning configuration: one pydantic model, the single declaration of every training option.

Its fields become `tuneforge train`'s options, help text included (cli/train_cmd.py builds them from here),
and the fields declared with `_api(...)` are also accepted by a fine-tuning job in `hyperparameters`
(tuneforge's extension of OpenAI's three; jobs/fine_tune.py). The platform sets the others itself (files,
output folder, resume) or takes them under OpenAI's names (n_epochs, batch_size, learning_rate_multiplier,
seed). Every API field has an upper bound, so that no one job's request can ask for unbounded memory, disk or
time (its project's disk quota and the job time limit, `tuneforge.limits`, cover what bounds alone cannot:
`weights: full` on a big base, checkpointing often).

Two choices shape a run: `method` (what is learned: `sft` imitates the answers of a chat file, `dpo` prefers one
answer of each pair of a preference file) and `weights` (a LoRA adapter, or every weight). `method` used to name
the second choice; the old values ("lora", "full") are still read as `weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

# Peak learning rates by (method, weights). DPO moves a model that already imitates well: a tenth of SFT's.
DEFAULT_LR = {("sft", "lora"): 1e-3, ("sft", "full"): 5e-5, ("dpo", "lora"): 1e-4, ("dpo", "full"): 5e-6}
API = {"hyperparameter": True}  # the json_schema_extra that marks a field the API accepts


def _api(default, description: str, **constraints):
    """A field that a fine-tuning job may also set through the API's `hyperparameters`."""
    return Field(default, description=description, json_schema_extra=API, **constraints)


class TrainConfig(BaseModel):
    # --- what to train
    model: str = Field(description="Base model: a registry name, an HF model folder, an adapter folder or hub id.")
    data: Path = Field(description="Training file: OpenAI chat fine-tuning JSONL (preference pairs for dpo).")
    validation: Path | None = Field(None, description="Validation file (same format): its loss is tracked.")
    out: Path = Field(description="Output folder: adapter (or model), checkpoints, metrics.jsonl, manifest.json.")
    method: Literal["sft", "dpo"] = Field("sft", description="sft: learn the answers; dpo: learn to prefer the "
                                          "preferred answer of each pair (usually after sft).")
    weights: Literal["lora", "full"] = _api("lora", "LoRA adapter on all linear layers, or all weights.")
    beta: float = _api(0.1, "DPO: how far from the starting model the preferences may pull (higher: less far).",
                       gt=0, le=2)
    # 1 by measurement (docs/benchmarks.md, "Preference tuning"): plain DPO moved probability to other wrong answers.
    sft_weight: float = _api(1.0, "DPO: add this times the SFT loss on the preferred answers (RPO; 0: plain DPO).",
                             ge=0, le=10)

    # --- optimization
    epochs: int | Literal["auto"] = Field("auto", description="Passes over the data; auto: ~320 examples, 1-10.")
    learning_rate: float | None = Field(None, description="Peak learning rate; default 1e-3 (LoRA), 5e-5 (full); "
                                        "a tenth of that for dpo.")
    batch_size: int = Field(4, ge=1, description="Examples per optimizer step (across all processes).")
    token_budget: int | None = _api(None, "Stop after the step that reaches this many tokens (prompts and "
                                    "answers, as `trained_tokens` counts them; an equal budget across runs); the "
                                    "schedule spans the budget.", ge=1, le=10**10)
    warmup_ratio: float = _api(0.05, "Share of steps with linear warmup, then cosine decay.", ge=0, lt=1)
    weight_decay: float = _api(0.0, "AdamW weight decay.", ge=0, le=1)
    max_grad_norm: float = _api(1.0, "Gradient clipping norm.", gt=0, le=1000)
    seed: int = Field(42, description="Seed for initialization and data order.")

    # --- LoRA
    lora_rank: int = _api(16, "LoRA rank.", ge=1, le=256)
    lora_alpha: int | None = _api(None, "LoRA alpha; default 2 x rank.", ge=1, le=1024)
    lora_dropout: float = _api(0.0, "Dropout on the LoRA path.", ge=0, lt=1)

    # --- sequences
    max_length: int = _api(2048, "Examples longer than this many tokens are truncated.", ge=16, le=32768)
    packing: bool = _api(True, "Pack short examples into shared rows (no attention across examples).")
    pack_tokens: int | None = _api(None, "Tokens per packed row; default 512 on CPU, 4096 on GPU.", ge=16, le=65536)
    gradient_checkpointing: bool = _api(False, "Recompute each layer's activations in backward instead of keeping "
                                        "them: far less memory on long rows, about a third more compute.")

    # --- bookkeeping
    checkpoint_every: int = _api(50, "Write a resumable checkpoint every N steps (and at the end).", ge=1,
                                 le=1_000_000)
    eval_every: int = _api(25, "Validation loss every N steps (and at the end).", ge=1, le=1_000_000)
    keep_checkpoints: int = _api(3, "Keep the newest N step checkpoints.", ge=1, le=10)
    skip_invalid: bool = _api(False, "Skip invalid rows instead of refusing the file.")
    resume: bool = Field(False, description="Continue from the newest checkpoint in the output folder.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Experiment trackers to log metrics to (where installed)."
    )

    @model_validator(mode="before")
    @classmethod
    def _old_method_names(cls, data):
        """`method: lora|full` (before DPO) means `weights`."""
        if isinstance(data, dict) and data.get("method") in ("lora", "full") and "weights" not in data:
            data = {**data, "weights": data["method"]}
            del data["method"]
        return data

    @classmethod
    def hyperparameters(cls) -> tuple[str, ...]:
        """The fields a fine-tuning job may set through `hyperparameters` (those declared with `_api`)."""
        return tuple(name for name, f in cls.model_fields.items() if f.json_schema_extra == API)

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else self.default_lr()

    def default_lr(self) -> float:
        return DEFAULT_LR[self.method, self.weights]

    def alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank
