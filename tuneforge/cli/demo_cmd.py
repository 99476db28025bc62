"""`tuneforge demo`: the end-to-end before/after run on a bundled task (the README's main job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.app import DataDir, app, out, use
from tuneforge.cli.progress import ProgressBar
from tuneforge.errors import UserError

Opt = typer.Option


@app.command()
def demo(
    task: Annotated[str, Opt(help="Bundled task (a folder of examples/).")] = "email_extraction",
    model: Annotated[str, Opt(help="Model to fine-tune.")] = "smollm2-135m-instruct",
    train_file: Annotated[Path | None, Opt("--train", help="Your own training file instead of a task.")] = None,
    test_file: Annotated[Path | None, Opt("--test", help="Your own test file (with --train).")] = None,
    test_limit: Annotated[int, Opt(help="Score the first N test rows (0: all).")] = 50,
    data_dir: DataDir = None,
) -> None:
    """Validate, score the base model, fine-tune with LoRA (default settings), score again, print a table."""
    use(data_dir)
    from tuneforge.demo import run_demo, task_files

    if (train_file is None) != (test_file is None):
        raise UserError("pass both --train and --test, or neither (to use a bundled task)")
    if train_file is None:
        train_file, test_file = task_files(task)
    with ProgressBar("demo") as bar:
        result = run_demo(model, train_file, test_file, test_limit=test_limit or None, on_event=bar)
    table = Table("model", "exact match", "field accuracy", title=f"held-out accuracy on {test_file}")
    for name, s in (("base " + model, result.before), ("fine-tuned (LoRA)", result.after)):
        table.add_row(name, f"{s.exact_match:.3f}", "-" if s.field_accuracy is None else f"{s.field_accuracy:.3f}")
    out.print(table)
    before, after = result.before.exact_match, result.after.exact_match
    gain = f"{after / before:.1f}x the base model's" if before else "the base model got none right"
    out.print(f"trained on {result.train_examples} examples, {result.steps} steps in {result.train_seconds:.0f} s; "
              f"exact match {after:.3f}, {gain}; adapter in {result.adapter}")
