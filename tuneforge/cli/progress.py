"""Draw progress events as a rich progress bar (loss, tokens/s, ETA)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuneforge.cli.app import console
from tuneforge.progress import Event


class ProgressBar:
    """A progress callback: use as `with ProgressBar("training") as bar: work(on_event=bar)`."""

    def __init__(self, label: str):
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event.kind == "message":
            self.progress.console.print(f"[dim]{event.message}[/dim]")
        elif event.kind == "start":
            if self.task is None:
                self.task = self.progress.add_task(self.label, total=event.total, completed=event.step, info="")
            else:
                self.progress.reset(self.task, total=event.total, completed=event.step)
        elif event.kind == "progress" and self.task is not None:
            self.progress.update(self.task, completed=event.step, info=_info(event.metrics))
        elif event.kind == "checkpoint":
            self.progress.console.print(f"[dim]checkpoint {event.message}[/dim]")


def _info(metrics: dict) -> str:
    parts = []
    if "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.4f}")
    if "valid_loss" in metrics:
        parts.append(f"val {metrics['valid_loss']:.4f}")
    if "tokens_per_s" in metrics:
        parts.append(f"{metrics['tokens_per_s']:.0f} tok/s")
    return "  ".join(parts)
