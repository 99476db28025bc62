"""`tuneforge train` and `tuneforge export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.app import DataDir, app, out, use
from tuneforge.cli.progress import ProgressBar
from tuneforge.errors import UserError

Opt = typer.Option


@app.command()
def train(
    model: Annotated[str, Opt(help="Base model: registry name, model folder, adapter folder or hub id.")],
    data: Annotated[Path, Opt(help="Training file (OpenAI chat JSONL).")],
    out_dir: Annotated[Path, Opt("--out", help="Output folder.")],
    validation: Annotated[Path | None, Opt(help="Validation file; its loss is tracked.")] = None,
    method: Annotated[str, Opt(help="lora or full.")] = "lora",
    epochs: Annotated[str, Opt(help="auto or a number (auto: ~800 examples seen, 1-10 epochs).")] = "auto",
    learning_rate: Annotated[float | None, Opt(help="Peak LR (default 1e-3 LoRA, 5e-5 full).")] = None,
    batch_size: Annotated[int, Opt(help="Examples per optimizer step.")] = 8,
    lora_rank: Annotated[int, Opt(help="LoRA rank.")] = 16,
    seed: Annotated[int, Opt(help="Seed for init and data order.")] = 42,
    max_length: Annotated[int, Opt(help="Truncate examples to this many tokens.")] = 2048,
    packing: Annotated[bool, Opt(help="Pack short examples into shared rows.")] = True,
    checkpoint_every: Annotated[int, Opt(help="Checkpoint every N steps.")] = 50,
    eval_every: Annotated[int, Opt(help="Validation loss every N steps.")] = 25,
    skip_invalid: Annotated[bool, Opt(help="Skip invalid rows instead of refusing the file.")] = False,
    resume: Annotated[bool, Opt(help="Continue from the newest checkpoint in --out.")] = False,
    report_to: Annotated[list[str] | None, Opt(help="tensorboard, wandb or mlflow (repeatable).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune a model on chat data (LoRA by default); writes an adapter and manifest.json to --out."""
    use(data_dir)
    from pydantic import ValidationError

    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train as run_training

    try:
        cfg = TrainConfig(
            model=model, data=data, out=out_dir, validation=validation, method=method,
            epochs=epochs if epochs == "auto" else _int(epochs, "--epochs"), learning_rate=learning_rate,
            batch_size=batch_size, lora_rank=lora_rank, seed=seed, max_length=max_length, packing=packing,
            checkpoint_every=checkpoint_every, eval_every=eval_every, skip_invalid=skip_invalid, resume=resume,
            report_to=report_to or [],
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    with ProgressBar("training") as bar:
        result = run_training(cfg, on_event=bar)
    m = result.metrics
    summary = f"done: {result.steps} steps, {result.trained_tokens:,} tokens, final loss {m.get('train_loss')}"
    if "valid_loss" in m:
        summary += f", validation loss {m['valid_loss']}"
    out.print(summary)
    out.print(f"adapter and manifest in {result.out}" if method == "lora" else f"model in {result.out}")


def _int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{flag} must be 'auto' or a whole number, got '{value}'") from None


@app.command()
def export(
    adapter: Annotated[str, typer.Argument(help="Adapter folder (or model) to export.")],
    out_dir: Annotated[Path, Opt("--out", help="Folder for the standalone model.")],
    merge: Annotated[bool, Opt(help="Merge the adapter into its base (required for now).")] = True,
    dtype: Annotated[str, Opt(help="bf16, fp16 or fp32.")] = "bf16",
    data_dir: DataDir = None,
) -> None:
    """Write a standalone Hugging Face model folder (adapter merged into its base)."""
    use(data_dir)
    if not merge:
        raise UserError("export writes a merged model: pass --merge (an adapter folder is already portable as is)")
    from tuneforge.models.export import export_merged

    path = export_merged(adapter, out_dir, dtype, on_event=lambda e: out.print(f"[dim]{e.message}[/dim]"))
    out.print(f"standalone model in {path}")
