"""Direct preference optimization, the `dpo` method of the training loop (Rafailov et al. 2023; TRL's "sigmoid").

For a pair, with log-probabilities summed over each answer's tokens under the policy (pi) and the reference (ref):

    loss = -log sigmoid(beta * ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)))

averaged over the step's pairs (whatever the packing and the number of processes, like SFT's token mean).

The reference is the starting model: the base with the new adapter switched off, or the adapter (or model) the run
continues, as it was before the first update. Its log-probabilities are computed once, before the first step, in
the same shared-prompt rows and without gradients, and kept in the checkpoints, so no second model sits in memory,
no step runs the reference again, and a resumed run uses the very same numbers. TRL keeps a reference adapter (or
model) and runs it at every step; the values are the same, since the reference never changes.

Metrics per step are TRL's: rewards are beta * (pi - ref); `preference_accuracy` is the share of pairs whose chosen
reward is strictly higher; `reward_margin` the mean difference.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from tuneforge.data.preference import EncodedPair
from tuneforge.training import plan, varlen
from tuneforge.training.config import TrainConfig
from tuneforge.training.examples import data_limits, load_pairs
from tuneforge.training.pair_rows import batches, collate_pairs, pair_logps, stack_rows, varlen_row
from tuneforge.training.sft import pack_tokens

# On a CPU a forward runs up to this many full rows' worth of tokens (padded), as one batch: cheaper per token than
# one row at a time. On a GPU a row (pack_tokens) is the most a forward runs: its activations are what bounds memory.
FORWARD_ROWS = 8
STATS = ("loss", "chosen_reward", "rejected_reward", "accuracy", "chosen_logp", "rejected_logp")


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float, sft_weight: float = 0.0,
             chosen_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses and statistics (columns as STATS) from [pairs, 2] log-probabilities (chosen, rejected).

    With `sft_weight`, each pair's loss adds that times the preferred answer's mean loss per token (RPO, Pang et
    al. 2024; TRL's `loss_type=["sigmoid", "sft"]`): the preferred answers stay likely while the pair's margin
    grows, where plain DPO may lower both, or shift what all answers have in common."""
    rewards = beta * (policy - reference)
    losses = -F.logsigmoid(rewards[:, 0] - rewards[:, 1])
    if sft_weight:
        losses = losses + sft_weight * -policy[:, 0] / chosen_tokens
    stats = torch.stack([losses, rewards[:, 0], rewards[:, 1], (rewards[:, 0] > rewards[:, 1]).to(rewards.dtype),
                         policy[:, 0], policy[:, 1]], dim=1)
    return losses, stats.detach()


def _metrics(sums: torch.Tensor, n: int, prefix: str = "") -> dict:
    mean = dict(zip(STATS, (sums / max(n, 1)).tolist()))
    loss = "valid_loss" if prefix else "train_loss"
    return {
        loss: round(mean["loss"], 5),
        f"{prefix}reward_margin": round(mean["chosen_reward"] - mean["rejected_reward"], 5),
        f"{prefix}preference_accuracy": round(mean["accuracy"], 4),
        f"{prefix}chosen_reward": round(mean["chosen_reward"], 5),
        f"{prefix}rejected_reward": round(mean["rejected_reward"], 5),
        f"{prefix}chosen_logp": round(mean["chosen_logp"], 3),
        f"{prefix}rejected_logp": round(mean["rejected_logp"], 3),
    }


class DPO:
    """Preference pairs, each prompt computed once for its two answers (see pair_rows.py)."""

    unit = "pairs"

    def __init__(self, cfg: TrainConfig, tokenizer, model, device: str, fresh_adapter: bool):
        limits = data_limits(cfg, model)
        self.train = load_pairs(cfg.data, tokenizer, **limits)
        self.valid = load_pairs(cfg.validation, tokenizer, **limits) if cfg.validation else None
        self.items: list[EncodedPair] = self.train.examples
        self.lengths = [len(p) for p in self.items]
        longest = max(self.lengths + [len(p) for p in self.valid.examples] if self.valid else self.lengths)
        self.capacity = max(pack_tokens(cfg, device), longest) if cfg.packing else 0
        rows = 1 if device.startswith("cuda") else FORWARD_ROWS
        self.forward_tokens = rows * max(pack_tokens(cfg, device), longest)
        self.window = sliding_window(model.config)
        self.varlen = varlen.applies(model, device)
        if self.varlen:
            varlen.use(model)
        self.beta, self.sft_weight = cfg.beta, cfg.sft_weight
        self.fresh_adapter = fresh_adapter
        self.reference: torch.Tensor | None = None
        self.valid_reference: torch.Tensor | None = None

    def prepare(self, model, acc, state: dict | None) -> None:
        """The reference log-probabilities: from the checkpoint when resuming, else from the model as it starts."""
        if state and "reference" in state:
            self.reference, self.valid_reference = state["reference"], state.get("valid_reference")
            return
        off = acc.unwrap_model(model).disable_adapter() if self.fresh_adapter else contextlib.nullcontext()
        with off:
            self.reference = self._logps(model, acc, self.items)
            self.valid_reference = self._logps(model, acc, self.valid.examples) if self.valid else None

    def state(self) -> dict:
        return {"reference": self.reference, "valid_reference": self.valid_reference}

    def forwards(self, pairs: list[EncodedPair], ids: list[int], acc) -> list[list[list[int]]]:
        """This process's share of `ids`: rows (first-fit by tokens, or a pair a row without packing) dealt
        round-robin to the processes, then grouped into batched forwards. Empty when there are fewer rows than
        processes."""
        lengths = [len(p) for p in pairs] if pairs is not self.items else self.lengths
        rows = plan.pack(ids, lengths, self.capacity) if self.capacity else [[i] for i in ids]
        return batches(rows[acc.process_index :: acc.num_processes], lengths, self.forward_tokens)

    @staticmethod
    def _chosen_tokens(pairs: list[EncodedPair], ids, device) -> torch.Tensor:
        return torch.tensor([max(len(pairs[i].chosen), 1) for i in ids], dtype=torch.float32, device=device)

    def _batch(self, pairs: list[EncodedPair], forward: list[list[int]]) -> dict:
        """One forward's rows: concatenated with their boundaries for varlen attention, or padded into a batch."""
        rows = [collate_pairs([pairs[i] for i in row], self.window, masked=not self.varlen) for row in forward]
        return varlen_row(rows) if self.varlen else stack_rows(rows)

    @torch.no_grad()
    def _logps(self, model, acc, pairs: list[EncodedPair]) -> torch.Tensor:
        """[pairs, 2] log-probabilities under the model as it is; each process computes its share of rows."""
        out = torch.zeros(len(pairs), 2, device=acc.device)
        for forward in self.forwards(pairs, list(range(len(pairs))), acc):
            with acc.autocast():
                logps = pair_logps(model, self._batch(pairs, forward), acc.device).float()
            out[[i for row in forward for i in row]] = logps
        return (acc.reduce(out, reduction="sum") if acc.num_processes > 1 else out).cpu()

    def step(self, model, acc, ids: list[int]) -> dict:
        """Forward and backward the step's pairs; each process scales its summed loss by world size / pairs, so the
        gradient DDP averages is that of the step's mean loss over pairs."""
        mine = self.forwards(self.items, ids, acc)
        dummy = not mine  # fewer rows than processes: still join the gradient sync, with zero weight
        mine = mine or [[ids[:1]]]
        sums = torch.zeros(len(STATS), device=acc.device)
        for j, forward in enumerate(mine):
            with contextlib.nullcontext() if j == len(mine) - 1 else acc.no_sync(model):
                with acc.autocast():
                    policy = pair_logps(model, self._batch(self.items, forward), acc.device)
                flat = [i for row in forward for i in row]
                losses, stats = dpo_loss(policy.float(), self.reference[flat].to(acc.device), self.beta,
                                         self.sft_weight, self._chosen_tokens(self.items, flat, acc.device))
                acc.backward(losses.sum() * (0.0 if dummy else acc.num_processes / len(ids)))
                if not dummy:
                    sums += stats.sum(0)
        return _metrics(acc.reduce(sums, reduction="sum").cpu(), len(ids))

    @torch.no_grad()
    def evaluate(self, model, acc) -> dict:
        policy = self._logps(model, acc, self.valid.examples)
        pairs = self.valid.examples
        _losses, stats = dpo_loss(policy, self.valid_reference, self.beta, self.sft_weight,
                                  self._chosen_tokens(pairs, range(len(pairs)), "cpu"))
        return _metrics(stats.sum(0), len(stats), prefix="valid_")


def sliding_window(config) -> int | None:
    """The window of a model's sliding-window layers, when it has both kinds (they then take a mask each)."""
    config = getattr(config, "text_config", config)
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return config.sliding_window
    return None
