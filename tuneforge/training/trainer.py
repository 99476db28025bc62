"""The training loop: LoRA (PEFT) or full weights, for any training method (sft.py, dpo.py), with checkpoints.

Built on transformers models, PEFT adapters and accelerate (devices, mixed precision, DDP, trackers).
We drive the loop ourselves rather than through transformers' Trainer / TRL's SFTTrainer and DPOTrainer for
three things they do not give together (docs/architecture.md says more):
- work only where the loss needs it: logits only where a token is trained; for preference pairs, the prompt
  computed once for its two answers and the reference once for the whole run (the methods' modules say how);
- one loss per optimizer step, averaged over all its tokens (or pairs) whatever the packing and the number of
  processes, so a distributed or resumed run computes the same update as a single uninterrupted one;
- exact resume from a step: the data plan is a pure function of the seed, so a step index restores it.

A method is a small object (`METHODS`): it loads its data and gives each item's length, computes what it needs
before the first step (`prepare`, with what its last checkpoint kept: `state`), and runs one step's forward and
backward (`step`) or a validation pass (`evaluate`), returning metrics. The loop does the rest the same for all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.errors import UserError
from tuneforge.models import registry
from tuneforge.models.loading import compute_dtype, load_model, load_tokenizer
from tuneforge.progress import Callback, Event, ignore
from tuneforge.training import checkpoint, plan
from tuneforge.training.config import TrainConfig
from tuneforge.training.dpo import DPO
from tuneforge.training.manifest import build_manifest
from tuneforge.training.sft import SFT

METHODS = {"sft": SFT, "dpo": DPO}


@dataclass
class TrainResult:
    out: Path
    steps: int
    trained_tokens: int
    metrics: dict


def _build_model(cfg: TrainConfig, ref: registry.ModelRef, device: str):
    from peft import LoraConfig, PeftModel, get_peft_model

    dtype = compute_dtype(device) if cfg.weights == "lora" else torch.float32
    model = load_model(ref.base, dtype=dtype, device=device)
    if cfg.gradient_checkpointing:
        # non-reentrant: gradients reach the LoRA weights although the checkpointed layers' inputs need none
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if cfg.weights == "full":
        if ref.adapter:
            raise UserError("--weights full needs a base model, not an adapter: export it with --merge first")
        return model
    if ref.adapter:
        return PeftModel.from_pretrained(model, ref.adapter, is_trainable=True)
    lora = LoraConfig(
        r=cfg.lora_rank, lora_alpha=cfg.alpha(), lora_dropout=cfg.lora_dropout,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def compute_paths(method, model, cfg: TrainConfig, device: str, precision: str) -> str:
    """One line: the device, precision, attention path, output layer path and checkpointing of a run."""
    from tuneforge.training import fused_head

    attention = "varlen (FlashAttention by example boundaries)" if method.varlen else "SDPA"
    head = "fused (no logits kept)" if fused_head.frozen_head(model) is not None else "logits"
    checkpointing = "on" if cfg.gradient_checkpointing else "off"
    rows = f"rows of up to {method.capacity} tokens" if method.capacity else "one example a row"
    return (f"{device}, {precision}: attention {attention}, output layer {head}, gradient checkpointing "
            f"{checkpointing}, {rows}")


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
    method = METHODS[cfg.method](cfg, run.tokenizer, model, device, fresh_adapter=cfg.weights == "lora"
                                 and not run.ref.adapter)
    if method.train.skipped:
        run.emit("message", f"skipped {method.train.skipped} invalid rows of {cfg.data}")
    if device != "cpu":  # what decides speed and memory on an accelerator, said once
        run.emit("message", compute_paths(method, model, cfg, device, acc.mixed_precision))
    epochs = plan.auto_epochs(len(method.items)) if cfg.epochs == "auto" else cfg.epochs
    steps = plan.within_budget(plan.plan_steps(len(method.items), cfg.batch_size, epochs, cfg.seed), method.lengths,
                               cfg.token_budget)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr(), weight_decay=cfg.weight_decay)
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * len(steps)), len(steps))
    model, optimizer = acc.prepare(model, optimizer)

    manifest_base = dict(
        cfg=cfg, base_model=run.base_name, base_path=run.ref.base, epochs=epochs, total_steps=len(steps),
        train=method.train, valid=method.valid, num_processes=acc.num_processes,
    )
    resumed = _maybe_resume(cfg, out, method.train.sha256, optimizer, scheduler, model, acc)
    start, trained_tokens, elapsed = (resumed["step"], resumed["trained_tokens"], resumed["elapsed_s"]) if resumed \
        else (0, 0, 0.0)
    t0 = time.perf_counter()
    model.eval()  # (no dropout in what is computed before the first step: DPO's reference)
    method.prepare(model, acc, resumed)
    model.train()  # dropout on (LoRA's, the model's own) and gradient checkpointing, which run only in training mode
    elapsed += 0.0 if resumed else time.perf_counter() - t0  # (work before step 1 is training time too)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / "metrics.jsonl", start)
    if cfg.report_to:
        acc.init_trackers("tuneforge", config={k: str(v) for k, v in cfg.model_dump().items()})
    run.emit("start", f"{len(method.items)} {method.unit}, {epochs} epochs, {len(steps)} steps", step=start,
             total=len(steps), metrics={"epochs": epochs, "batch_size": cfg.batch_size, "learning_rate": cfg.lr()})

    metrics: dict = {}
    for step in range(start, len(steps)):
        t0 = time.perf_counter()
        measured = method.step(model, acc, steps[step])
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        elapsed += dt
        tokens = sum(method.lengths[i] for i in steps[step])
        trained_tokens += tokens
        metrics = {
            "step": step + 1, "epoch": round((step + 1) / len(steps) * epochs, 3), **measured,
            "learning_rate": scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4),
            "tokens": tokens, "tokens_per_s": round(tokens / dt, 1), "trained_tokens": trained_tokens,
            "elapsed_s": round(elapsed, 2),
        }
        done = step + 1 == len(steps)
        if method.valid and ((step + 1) % cfg.eval_every == 0 or done):
            model.eval()
            metrics.update(method.evaluate(model, acc))
            model.train()
        _log(run, metrics)
        run.emit("progress", step=step + 1, total=len(steps), metrics=metrics)
        if (step + 1) % cfg.checkpoint_every == 0 or done:
            state = {
                "step": step + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": checkpoint.rng_state(), "data_sha256": method.train.sha256,
                "trained_tokens": trained_tokens, "elapsed_s": elapsed, **method.state(),
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


def _maybe_resume(cfg, out: Path, data_sha: str, optimizer, scheduler, model, acc) -> dict | None:
    """The newest checkpoint's state, with weights, optimizer, scheduler and random state restored from it."""
    if not cfg.resume:
        if checkpoint.latest(out) is not None:
            raise UserError(f"{out} already holds a training run: pass --resume to continue it, or choose a new --out")
        return None
    path = checkpoint.latest(out)
    if path is None:
        return None  # nothing to resume: start from the beginning
    state = checkpoint.read(path)
    if state["data_sha256"] != data_sha:
        raise UserError(f"{cfg.data} changed since the checkpoint in {path}: resume with the same file")
    _load_weights(acc.unwrap_model(model), path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(state["rng"])
    return state


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
