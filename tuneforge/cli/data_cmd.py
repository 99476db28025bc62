"""`tuneforge data validate`: check a chat fine-tuning file (or a file of preference pairs for DPO) the way OpenAI
does, with token statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.app import DataDir, app, console, out, use

data_app = typer.Typer(help="Work with chat fine-tuning data (OpenAI JSONL).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("validate")
def validate(
    file: Path,
    model: Annotated[str, typer.Option(help="Model whose tokenizer counts tokens.")] = "smollm2-135m-instruct",
    max_length: Annotated[int, typer.Option(help="Training length; longer rows would be truncated.")] = 2048,
    epochs: Annotated[int, typer.Option(help="Epochs for the billed-token estimate.")] = 3,
    data_dir: DataDir = None,
) -> None:
    """Report every problem as FILE:LINE: field: what is wrong; exit 1 if there is any."""
    use(data_dir)
    from transformers import AutoConfig

    from tuneforge.models import registry
    from tuneforge.models.loading import context_length, load_tokenizer
    from tuneforge.training.examples import validate_for_model

    ref = registry.resolve(model, lambda m: console.print(f"[dim]{m}[/dim]"))
    context = context_length(AutoConfig.from_pretrained(ref.base))
    report, _ = validate_for_model(file, load_tokenizer(ref.base), context, min(max_length, context or max_length),
                                   epochs, preferences=True)
    for line in report.format_problems():
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    _print_stats(report.stats, report.format)
    if not report.ok:
        console.print(f"[red]{len(report.problems)} problem(s)[/red] in {file}")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {file}")


def _print_stats(s, fmt: str) -> None:
    table = Table("stat", "value", title="data statistics")
    pairs = fmt == "preference"
    table.add_row("format", "preference pairs (DPO)" if pairs else "chat (supervised)")
    table.add_row("valid pairs" if pairs else "valid examples", str(s.examples))
    table.add_row("invalid pairs" if pairs else "invalid examples", str(s.invalid))
    table.add_row("assistant messages", str(s.assistant_messages))
    if s.tokens_max is not None:
        table.add_row("tokens per example (min / p50 / p90 / p99 / max)",
                      f"{s.tokens_min} / {s.tokens_p50} / {s.tokens_p90} / {s.tokens_p99} / {s.tokens_max}")
        table.add_row("mean tokens per example", f"{s.tokens_mean:.1f}")
        table.add_row("examples that would be truncated", str(s.truncated))
        table.add_row(f"billed tokens for {s.epochs} epochs", f"{s.billed_tokens:,}")
    out.print(table)
