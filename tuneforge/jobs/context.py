"""What a running job gets from the worker that runs it: its row, the store, a way to report, a way to stop.

Its own module so that job kinds and the worker loop can both import it without importing each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tuneforge.store import jobs
from tuneforge.store.db import Database
from tuneforge.store.tables import Job


class JobStopped(Exception):
    """The job was cancelled, or is no longer this worker's: stop without writing a result."""


@dataclass
class JobContext:
    """A job being run: its row (as claimed), the store, the worker's id, and the stop flag the worker's
    heartbeat thread sets when the job stops being this worker's."""

    job: Job
    db: Database
    worker_id: str
    stop: threading.Event = field(default_factory=threading.Event)

    def event(self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None) -> None:
        with self.db.session() as s:
            jobs.add_event(s, self.job.id, message, level=level, type=type, data=data)

    def check(self) -> None:
        """Raise JobStopped if the job should stop (call it often: at least once per training step)."""
        if self.stop.is_set():
            raise JobStopped()
