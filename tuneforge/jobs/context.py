"""What a running job gets from the worker that runs it: its row, the store, a way to report, a way to stop.

The worker holds each job it runs on a lease: its heartbeat renews it, and once `lease_s` have passed since the
last renewal that got through, the worker may write nothing more for the job (no checkpoint, no event, no
outcome), since another worker may soon take it over. `check()` enforces that wherever a job calls it, whether
or not the heartbeat thread is still able to say so.

Its own module so that job kinds and the worker loop can both import it without importing each other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import OperationalError

from tuneforge.progress import Event
from tuneforge.store import jobs
from tuneforge.store.db import Database
from tuneforge.store.tables import Job

log = logging.getLogger("tuneforge.worker")


class JobStopped(Exception):
    """The job was cancelled, is no longer this worker's, or its lease lapsed: stop without writing a result."""


@dataclass
class JobContext:
    """A job being run: its row (as claimed), the store, the worker's id, its lease, and the stop flag the
    worker's heartbeat thread sets when the job stops being this worker's."""

    job: Job
    db: Database
    worker_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    parent: JobContext | None = None  # set when this job runs inside another (a bake-off's child)
    run_child: Callable[[str], Job] | None = None  # the worker's: run or wait for a child job until it ends
    lease_s: float = 15.0  # how long after its last renewal the lease holds (the worker's stale limit / 2)
    renewed_at: float = field(default_factory=time.time)  # when the last heartbeat that got through was taken
    lost: bool = False  # the lease lapsed: write nothing more for this job
    failure: dict | None = None  # the error to fail the job with, when the worker stops it (over its time limit)

    def event(self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None) -> None:
        """Record an event; one the database cannot take now is dropped (the lease decides whether the job
        goes on)."""
        try:
            with self.db.session() as s:
                jobs.add_event(s, self.job.id, message, level=level, type=type, data=data)
        except OperationalError as exc:
            log.warning("%s: event not recorded (%s): %s", self.job.id, str(exc).splitlines()[0], message)

    def check(self) -> None:
        """Raise JobStopped if the job should stop (call it often: at least once per training step, and
        right before writing anything the job makes, such as a checkpoint)."""
        if self.parent is not None:
            self.parent.check()
        if self.lapsed():
            self.lose()
        if self.stop.is_set():
            raise JobStopped()

    def lapsed(self) -> bool:
        """Whether the lease has lapsed (the worker may write nothing more for the job)."""
        return self.lost or time.time() - self.renewed_at > self.lease_s

    def renewed(self, at: float) -> None:
        self.renewed_at = max(self.renewed_at, at)

    def lose(self) -> None:
        """The lease lapsed: stop, writing nothing more."""
        if not self.lost:
            log.warning("%s: lease lapsed (no heartbeat got through for %.0f s): stopping without writing more",
                        self.job.id, time.time() - self.renewed_at)
        self.lost = True
        self.stop.set()

    def fail(self, error: dict) -> None:
        """Stop the job, to be recorded as failed with this error."""
        self.failure = error
        self.stop.set()

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


def save_rows(job: Job, rows: list[dict]) -> None:
    """The rows a job works on, copied into its folder when it is accepted: a file deleted or a dataset changed
    later does not change the job."""
    folder = Path(job.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def load_rows(job: Job) -> list[dict]:
    text = (Path(job.out_dir) / "rows.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line]  # not splitlines: U+2028 is in rows
