"""Supervised fine-tuning, the `sft` method of the training loop: loss on assistant tokens only, on packed rows.

Logits are computed only where the loss counts: transformers' boolean `logits_to_keep` skips the vocabulary
projection for every prompt token, which is most of the tokens in typical task data. A step's loss is the mean
over all its assistant tokens whatever the packing and the number of processes (see `_step`). On CUDA, packed
rows (shared-prefix ones too) carry their examples' boundaries and attend through one fused varlen kernel per
layer instead of SDPA with a row-sized mask (varlen.py).
"""

from __future__ import annotations

import contextlib

import torch

from tuneforge.data.render import IGNORE, Encoded
from tuneforge.training import fused_head, plan, varlen
from tuneforge.training.config import TrainConfig
from tuneforge.training.examples import data_limits, load_examples


def loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy over the tokens whose label is set; logits are computed only for those (fused_head.py:
    not even for those, where the output layer is frozen)."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
              "attention_mask": batch.get("attention_mask"), **{k: batch[k] for k in varlen.KEYS if k in batch}}
    return -fused_head.target_logps(model, inputs, keep, labels[:, 1:][keep[:, :-1]]).sum()


def pack_tokens(cfg: TrainConfig, device: str) -> int:
    return cfg.pack_tokens or (4096 if device.startswith("cuda") else 512)


class SFT:
    """Chat examples; each step's examples packed into rows (sharing a common prompt prefix where they have one)."""

    unit = "examples"

    def __init__(self, cfg: TrainConfig, tokenizer, model, device: str, fresh_adapter: bool):
        limits = data_limits(cfg, model)
        self.train = load_examples(cfg.data, tokenizer, **limits)
        self.valid = load_examples(cfg.validation, tokenizer, **limits) if cfg.validation else None
        self.items: list[Encoded] = self.train.examples
        self.lengths = [len(e.input_ids) for e in self.items]
        self.capacity = plan.row_capacity(self.lengths, pack_tokens(cfg, device)) if cfg.packing else 0
        # A custom block mask replaces the model's own masks, sliding-window ones included: share a prefix only
        # where rows stay within the window.
        window = getattr(getattr(model.config, "text_config", model.config), "sliding_window", None)
        self.share_prefix = not window or self.capacity <= window
        self.varlen = varlen.applies(model, device)
        if self.varlen:
            varlen.use(model)

    def prepare(self, model, acc, state: dict | None) -> None:
        """Nothing to compute before the first step."""

    def state(self) -> dict:
        return {}

    def step(self, model, acc, ids: list[int]) -> dict:
        rows = plan.build_rows([self.items[i] for i in ids], self.capacity, self.share_prefix)
        if self.varlen:
            rows = [varlen.with_boundaries(row) for row in rows]
        return {"train_loss": round(_step(model, acc, rows, plan.step_trained_tokens(ids, self.items)), 5)}

    def evaluate(self, model, acc) -> dict:
        return {"valid_loss": round(evaluate_loss(model, self.valid.examples, self.capacity or 1, acc), 5)}


def _step(model, acc, rows: list[dict[str, torch.Tensor]], n_loss: int) -> float:
    """Forward and backward every row of one step; returns the step's mean loss per trained token.

    Rows are dealt round-robin to processes; each scales its summed loss by world size / step tokens, so the
    gradient DDP averages is exactly the gradient of the step's token-mean loss.
    """
    mine = rows[acc.process_index :: acc.num_processes]
    dummy = not mine  # fewer rows than processes: this one still joins the gradient sync, with zero weight
    mine = mine or rows[:1]
    total = torch.zeros((), device=acc.device)
    for j, row in enumerate(mine):
        sync = j == len(mine) - 1
        with contextlib.nullcontext() if sync else acc.no_sync(model):
            batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in row.items()}
            with acc.autocast():
                s = loss_sum(model, batch)
            scale = 0.0 if dummy else acc.num_processes / max(n_loss, 1)
            acc.backward(s * scale)
            if not dummy:
                total += s.detach()
    return float(acc.reduce(total, reduction="sum")) / max(n_loss, 1)


@torch.no_grad()
def evaluate_loss(model, examples: list[Encoded], capacity: int, acc=None) -> float:
    """Mean loss per assistant token over examples (packed like training)."""
    lengths = [len(e.input_ids) for e in examples]
    rows = plan.pack(list(range(len(examples))), lengths, max(capacity, max(lengths)))
    total, n = 0.0, 0
    device = acc.device if acc else next(model.parameters()).device
    for row in rows:
        batch = {k: v.to(device) for k, v in plan.collate([examples[i] for i in row]).items()}
        ctx = acc.autocast() if acc else contextlib.nullcontext()
        with ctx:
            total += float(loss_sum(model, batch))
        n += sum(examples[i].num_trained for i in row)
    return total / max(n, 1)
