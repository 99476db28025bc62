"""Supervised fine-tuning: LoRA (PEFT) or full, on packed rows, with loss on assistant tokens only.

Built on transformers models, PEFT adapters and accelerate (devices, mixed precision, DDP, trackers).
We drive the loop ourselves rather than through transformers' Trainer / TRL's SFTTrainer for three things
they do not give together (docs/architecture.md says more):
- logits only where the loss counts: transformers' boolean `logits_to_keep` skips the vocabulary projection
  for every prompt token, which is most of the tokens in typical task data;
- one loss per optimizer step, averaged over all its assistant tokens whatever the packing and the number of
  processes, so a distributed or resumed run computes the same update as a single uninterrupted one;
- exact resume from a step: the data plan is a pure function of the seed, so a step index restores it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tuneforge.data.render import IGNORE, Encoded
from tuneforge.errors import UserError
from tuneforge.models import registry
from tuneforge.models.loading import compute_dtype, context_length, load_model, load_tokenizer
from tuneforge.progress import Callback, Event, ignore
from tuneforge.training import checkpoint, plan
from tuneforge.training.config import TrainConfig
from tuneforge.training.examples import load_examples
from tuneforge.training.manifest import build_manifest


@dataclass
class TrainResult:
    out: Path
    steps: int
    trained_tokens: int
    metrics: dict


def loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy over the tokens whose label is set; logits are computed only for those."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    out = model(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=batch.get("attention_mask"),
        logits_to_keep=keep, use_cache=False,
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
    return F.cross_entropy(logits, labels[:, 1:][keep[:, :-1]], reduction="sum")


def _build_model(cfg: TrainConfig, ref: registry.ModelRef, device: str):
    from peft import LoraConfig, PeftModel, get_peft_model

    dtype = compute_dtype(device) if cfg.method == "lora" else torch.float32
    model = load_model(ref.base, dtype=dtype, device=device)
    if cfg.method == "full":
        if ref.adapter:
            raise UserError("--method full needs a base model, not an adapter: export it with --merge first")
        return model
    if ref.adapter:
        return PeftModel.from_pretrained(model, ref.adapter, is_trainable=True)
    lora = LoraConfig(
        r=cfg.lora_rank, lora_alpha=cfg.alpha(), lora_dropout=cfg.lora_dropout,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


class _Run:
    """State of one training run (kept small: the loop itself is in `train`)."""

    def __init__(self, cfg: TrainConfig, on_event: Callback, may_write: Callable[[], None] | None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.may_write = may_write or (lambda: None)
        self.out = Path(cfg.out)
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.acc = Accelerator(
            cpu=not cuda, mixed_precision="bf16" if bf16 else "no",
            log_with=cfg.report_to or None, project_dir=str(self.out),
        )
        self.on_event = on_event if self.acc.is_main_process else ignore
        set_seed(cfg.seed)
        self.ref = registry.resolve(cfg.model, lambda m: self.on_event(Event("message", m)))
        self.base_name = self._base_name()
        self.tokenizer = load_tokenizer(self.ref.base)

    def _base_name(self) -> str:
        if self.ref.adapter:
            manifest = self.ref.adapter / "manifest.json"
            if manifest.exists():
                return json.loads(manifest.read_text())["base_model"]
            return self.ref.base
        return self.cfg.model if registry.is_base(self.cfg.model) else self.ref.base

    def emit(self, kind: str, message: str = "", **kw) -> None:
        self.on_event(Event(kind, message, **kw))


def train(cfg: TrainConfig, on_event: Callback = ignore, may_write: Callable[[], None] | None = None) -> TrainResult:
    """Train as `cfg` says. `may_write` is asked before each checkpoint and the final weights are written (and
    before a checkpoint is committed): it raises to stop the run first (a worker that no longer holds the job,
    a project over its disk quota)."""
    run = _Run(cfg, on_event, may_write)
    acc, out = run.acc, run.out
    device = str(acc.device)
    model = _build_model(cfg, run.ref, device)
    ctx = context_length(model)
    max_length = min(cfg.max_length, ctx) if ctx else cfg.max_length
    load = dict(context=ctx, max_length=max_length, skip_invalid=cfg.skip_invalid)
    train_data = load_examples(cfg.data, run.tokenizer, **load)
    valid_data = load_examples(cfg.validation, run.tokenizer, **load) if cfg.validation else None
    if train_data.skipped:
        run.emit("message", f"skipped {train_data.skipped} invalid rows of {cfg.data}")
    examples = train_data.examples
    epochs = plan.auto_epochs(len(examples)) if cfg.epochs == "auto" else cfg.epochs
    lengths = [len(e.input_ids) for e in examples]
    steps = plan.within_budget(plan.plan_steps(len(examples), cfg.batch_size, epochs, cfg.seed), lengths,
                               cfg.token_budget)
    capacity, share_prefix = _row_layout(cfg, model, device, lengths)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr(), weight_decay=cfg.weight_decay)
    from transformers import get_cosine_schedule_with_warmup

    warmup = round(cfg.warmup_ratio * len(steps))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, len(steps))
    model, optimizer = acc.prepare(model, optimizer)

    manifest_base = dict(
        cfg=cfg, base_model=run.base_name, base_path=run.ref.base, epochs=epochs, total_steps=len(steps),
        train=train_data, valid=valid_data, num_processes=acc.num_processes,
    )
    start, trained_tokens, elapsed = _maybe_resume(cfg, out, train_data.sha256, optimizer, scheduler, model, acc)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / "metrics.jsonl", start)
    if cfg.report_to:
        acc.init_trackers("tuneforge", config={k: str(v) for k, v in cfg.model_dump().items()})
    run.emit("start", f"{len(examples)} examples, {epochs} epochs, {len(steps)} steps", step=start, total=len(steps),
             metrics={"epochs": epochs, "batch_size": cfg.batch_size, "learning_rate": cfg.lr()})

    metrics: dict = {}
    for step in range(start, len(steps)):
        t0 = time.perf_counter()
        batch_ids = steps[step]
        rows = plan.build_rows([examples[i] for i in batch_ids], capacity, share_prefix)
        n_loss = plan.step_trained_tokens(batch_ids, examples)
        loss = _step(model, acc, rows, n_loss)
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        elapsed += dt
        tokens = sum(lengths[i] for i in batch_ids)
        trained_tokens += tokens
        metrics = {
            "step": step + 1, "epoch": round((step + 1) / len(steps) * epochs, 3), "train_loss": round(loss, 5),
            "learning_rate": scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4),
            "tokens": tokens, "tokens_per_s": round(tokens / dt, 1), "trained_tokens": trained_tokens,
            "elapsed_s": round(elapsed, 2),
        }
        done = step + 1 == len(steps)
        if valid_data and ((step + 1) % cfg.eval_every == 0 or done):
            metrics["valid_loss"] = round(evaluate_loss(model, valid_data.examples, capacity or 1, acc), 5)
        _log(run, metrics)
        run.emit("progress", step=step + 1, total=len(steps), metrics=metrics)
        if (step + 1) % cfg.checkpoint_every == 0 or done:
            state = {
                "step": step + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": checkpoint.rng_state(), "data_sha256": train_data.sha256,
                "trained_tokens": trained_tokens, "elapsed_s": elapsed,
            }
            _checkpoint(run, model, state, build_manifest(**manifest_base, step=step + 1, metrics=metrics))
    acc.wait_for_everyone()
    if acc.is_main_process:
        run.may_write()
        final = build_manifest(**manifest_base, step=len(steps), metrics=metrics)
        _save_weights(acc.unwrap_model(model), out, run.tokenizer)
        (out / "manifest.json").write_text(json.dumps(final, indent=2))
    if cfg.report_to:
        acc.end_training()
    run.emit("done", f"saved to {out}", metrics=metrics)
    return TrainResult(out, len(steps), trained_tokens, metrics)


def _row_layout(cfg: TrainConfig, model, device: str, lengths: list[int]) -> tuple[int, bool]:
    """Packed row length (0: no packing) and whether rows may share a prompt prefix."""
    pack_tokens = cfg.pack_tokens or (4096 if device.startswith("cuda") else 512)
    capacity = plan.row_capacity(lengths, pack_tokens) if cfg.packing else 0
    # A custom block mask replaces the model's own masks, sliding-window ones included: share a prefix only
    # where rows stay within the window.
    window = getattr(getattr(model.config, "text_config", model.config), "sliding_window", None)
    return capacity, not window or capacity <= window


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
            batch = {k: v.to(acc.device) for k, v in row.items()}
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
    model.eval()
    total, n = 0.0, 0
    device = acc.device if acc else next(model.parameters()).device
    for row in rows:
        batch = {k: v.to(device) for k, v in plan.collate([examples[i] for i in row]).items()}
        ctx = acc.autocast() if acc else contextlib.nullcontext()
        with ctx:
            total += float(loss_sum(model, batch))
        n += sum(examples[i].num_trained for i in row)
    model.train()
    return total / max(n, 1)


def _maybe_resume(cfg, out: Path, data_sha: str, optimizer, scheduler, model, acc) -> tuple[int, int, float]:
    if not cfg.resume:
        if checkpoint.latest(out) is not None:
            raise UserError(f"{out} already holds a training run: pass --resume to continue it, or choose a new --out")
        return 0, 0, 0.0
    path = checkpoint.latest(out)
    if path is None:
        return 0, 0, 0.0  # nothing to resume: start from the beginning
    state = checkpoint.read(path)
    if state["data_sha256"] != data_sha:
        raise UserError(f"{cfg.data} changed since the checkpoint in {path}: resume with the same file")
    _load_weights(acc.unwrap_model(model), path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(state["rng"])
    return state["step"], state["trained_tokens"], state["elapsed_s"]


def _save_weights(model, folder: Path, tokenizer=None) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None and not hasattr(model, "peft_config"):
        tokenizer.save_pretrained(folder)  # a full model folder must stand alone


def _load_weights(model, folder: Path) -> None:
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    else:
        state = {}
        for shard in sorted(folder.glob("model*.safetensors")):
            state.update(load_file(shard))
        model.load_state_dict(state, strict=False)  # tied weights are saved once


def _checkpoint(run: _Run, model, state: dict, manifest: dict) -> None:
    run.acc.wait_for_everyone()
    if run.acc.is_main_process:
        unwrapped = run.acc.unwrap_model(model)
        path = checkpoint.write(
            run.out, state["step"], lambda d: _save_weights(unwrapped, d, run.tokenizer), state, manifest,
            run.cfg.keep_checkpoints, run.may_write,
        )
        run.emit("checkpoint", str(path), step=state["step"])
    run.acc.wait_for_everyone()


def _log(run: _Run, metrics: dict) -> None:
    if run.acc.is_main_process:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
    if run.cfg.report_to:
        run.acc.log({k: v for k, v in metrics.items() if k != "step"}, step=metrics["step"])


def _truncate_metrics(path: Path, start: int) -> None:
    """On resume, drop lines of steps after the checkpoint: those steps run again."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= start]
    path.write_text("".join(line + "\n" for line in keep))
