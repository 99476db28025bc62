"""One callback type for long work: the CLI draws it as a progress bar, a worker stores it as job events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    """Something long-running work reports.

    kind: "message" (a line of text), "start" (total is known), "progress" (step of total, with metrics),
    "metrics" (e.g. a validation loss), "checkpoint" (a checkpoint was written), "done".
    """

    kind: str
    message: str = ""
    step: int = 0
    total: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The callback for callers who do not want progress."""
