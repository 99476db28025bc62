"""Draw progress events as a rich progress bar (loss, tokens/s, ETA), or, when the output is not a terminal
(a log file, CI, a pipe), as plain lines: one at the start of each phase, then at most one every few seconds."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuneforge.cli.app import console
from tuneforge.progress import Event

PLAIN_EVERY_S = 5.0


class ProgressBar:
    """A progress callback: use as `with ProgressBar("training") as bar: work(on_event=bar)`."""

    def __init__(self, label: str):
        self.label = label
        self.plain = not console.is_terminal
        self.last_line = 0.0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = None

    def __enter__(self):
        if not self.plain:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if not self.plain:
            self.progress.stop()

    def __call__(self, event: Event) -> None:
        if self.plain:
            self._line(event)
            return
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


    def _line(self, event: Event) -> None:
        now = time.monotonic()
        if event.kind in ("message", "checkpoint") and event.message:
            console.print(event.message if event.kind == "message" else f"checkpoint {event.message}",
                          highlight=False, markup=False)
        elif event.kind == "start":
            self.last_line = now
            what = f" {event.message}" if event.message else ""
            console.print(f"{self.label}:{what} {event.step}/{event.total}", highlight=False, markup=False)
        elif event.kind == "progress" and (now - self.last_line >= PLAIN_EVERY_S or event.step == event.total):
            self.last_line = now
            info = _info(event.metrics)
            console.print(f"{self.label}: {event.step}/{event.total}" + (f"  {info}" if info else ""), highlight=False,
                          markup=False)


def _info(metrics: dict) -> str:
    parts = []
    if "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.4f}")
    if "valid_loss" in metrics:
        parts.append(f"val {metrics['valid_loss']:.4f}")
    if "tokens_per_s" in metrics:
        parts.append(f"{metrics['tokens_per_s']:.0f} tok/s")
    if "score" in metrics:  # a merge search's trial, and the best so far
        parts.append(f"score {metrics['score']:.3f} (best {metrics.get('best', metrics['score']):.3f})")
    return "  ".join(parts)
