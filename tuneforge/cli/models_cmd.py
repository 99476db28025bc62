"""`tuneforge models`: list models, print a model's folder."""

from __future__ import annotations

import typer
from rich.table import Table

from tuneforge.cli.app import DataDir, app, console, out, use
from tuneforge.models import registry

models_app = typer.Typer(help="List models; print a model's Hugging Face folder.", invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def list_models(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """List the registry's models and whether each is materialized."""
    use(data_dir)
    if ctx.invoked_subcommand:
        return
    table = Table("name", "ready", "source")
    for name, spec in registry.BUNDLED.items():
        made = registry.is_materialized(name)
        ready = str(registry.materialized_path(name)) if made else "not yet (made on first use)"
        table.add_row(name, ready, spec.description)
    for name, folder in registry.local_bases().items():
        table.add_row(name, str(folder), "the operator's base (TUNEFORGE_BASES)")
    out.print(table)
    out.print("Any HF model folder, adapter folder or hub id also works wherever a model is named.")


@models_app.command("path")
def model_path(name: str, data_dir: DataDir = None) -> None:
    """Print the HF folder of NAME, materializing a bundled model first if needed."""
    use(data_dir)
    ref = registry.resolve(name, lambda m: console.print(f"[dim]{m}[/dim]"))
    print(ref.adapter or ref.base)
