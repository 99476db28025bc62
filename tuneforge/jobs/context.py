"""What a running job gets from the worker that runs it: its row, the store, a way to report, a way to stop.

Its own module so that job kinds and the worker loop can both import it without importing each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tuneforge.progress import Event
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
    parent: JobContext | None = None  # set when this job runs inside another (a bake-off's child)
    run_child: Callable[[str], Job] | None = None  # the worker's: run or wait for a child job until it ends

    def event(self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None) -> None:
        with self.db.session() as s:
            jobs.add_event(s, self.job.id, message, level=level, type=type, data=data)

    def check(self) -> None:
        """Raise JobStopped if the job should stop (call it often: at least once per training step)."""
        if self.stop.is_set() or (self.parent is not None and self.parent.stop.is_set()):
            raise JobStopped()

    def wait_for(self, job_id: str) -> Job:
        """A child job's row once it has ended: run here if it is queued, else waited for while another
        worker runs it."""
        if self.run_child is None:
            raise RuntimeError("this job was not started by a worker that runs child jobs")
        return self.run_child(job_id)


class ProgressEvents:
    """A core progress callback (`tuneforge.progress`) as job events: at most one progress event a second (and
    the last step), every message and phase start, and a stop check at each call."""

    EVERY_S = 1.0

    def __init__(self, ctx: JobContext):
        self.ctx, self.last = ctx, 0.0

    def __call__(self, ev: Event) -> None:
        self.ctx.check()
        if ev.kind == "metrics" and ev.metrics:  # e.g. a criterion judge's agreement with the labels
            self.ctx.event(ev.message or "metrics", type="metrics", data=ev.metrics)
        elif ev.kind == "progress":
            now = time.monotonic()
            if now - self.last < self.EVERY_S and ev.step != ev.total:
                return
            self.last = now
            self.ctx.event(f"{ev.message or 'progress'}: {ev.step}/{ev.total}", type="metrics",
                           data={"step": ev.step, "total": ev.total, **ev.metrics})
        elif ev.message and ev.kind in ("message", "start"):
            self.ctx.event(ev.message)
