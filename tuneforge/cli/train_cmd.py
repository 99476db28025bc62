"""`tuneforge train` and `tuneforge export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.app import DataDir, app, out, use
from tuneforge.cli.progress import ProgressBar
from tuneforge.errors import UserError

Opt = typer.Option


def _help(name: str) -> str:
    from tuneforge.training.config import TrainConfig

    return TrainConfig.model_fields[name].description


@app.command()
def train(
    model: Annotated[str, Opt(help=_help("model"))],
    data: Annotated[Path, Opt(help=_help("data"))],
    out_dir: Annotated[Path, Opt("--out", help=_help("out"))],
    validation: Annotated[Path | None, Opt(help=_help("validation"))] = None,
    method: Annotated[str | None, Opt(help=_help("method"), show_default="lora")] = None,
    epochs: Annotated[str | None, Opt(help=_help("epochs"), show_default="auto")] = None,
    learning_rate: Annotated[float | None, Opt(help=_help("learning_rate"))] = None,
    batch_size: Annotated[int | None, Opt(help=_help("batch_size"), show_default="4")] = None,
    lora_rank: Annotated[int | None, Opt(help=_help("lora_rank"), show_default="16")] = None,
    seed: Annotated[int | None, Opt(help=_help("seed"), show_default="42")] = None,
    max_length: Annotated[int | None, Opt(help=_help("max_length"), show_default="2048")] = None,
    packing: Annotated[bool, Opt(help=_help("packing"))] = True,
    checkpoint_every: Annotated[int | None, Opt(help=_help("checkpoint_every"), show_default="50")] = None,
    eval_every: Annotated[int | None, Opt(help=_help("eval_every"), show_default="25")] = None,
    skip_invalid: Annotated[bool, Opt(help=_help("skip_invalid"))] = False,
    resume: Annotated[bool, Opt(help=_help("resume"))] = False,
    report_to: Annotated[list[str] | None, Opt(help=_help("report_to") + " Repeatable.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune a model on chat data (LoRA by default); writes an adapter and manifest.json to --out."""
    use(data_dir)
    from pydantic import ValidationError

    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train as run_training

    given = dict(
        validation=validation, method=method, learning_rate=learning_rate, batch_size=batch_size,
        lora_rank=lora_rank, seed=seed, max_length=max_length, checkpoint_every=checkpoint_every,
        eval_every=eval_every, report_to=report_to,
        epochs=None if epochs is None else epochs if epochs == "auto" else _int(epochs, "--epochs"),
    )
    try:
        cfg = TrainConfig(
            model=model, data=data, out=out_dir, packing=packing, skip_invalid=skip_invalid, resume=resume,
            **{k: v for k, v in given.items() if v is not None},
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
    out.print(f"{'adapter' if cfg.method == 'lora' else 'model'} and manifest in {result.out}")


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
