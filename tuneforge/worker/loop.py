"""The worker process: poll the queue, run one job at a time, heartbeat while it runs.

A heartbeat thread marks the job alive every few seconds; when the mark fails (the job was cancelled, or
requeued after this worker looked dead) it tells the job to stop, which it does at its next progress event.
Before claiming, a worker requeues jobs whose worker stopped heartbeating: a SIGKILLed worker's job goes
back to the queue and, since training resumes from the newest checkpoint in the job's folder, continues
where it left off.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from dataclasses import dataclass, field

from tuneforge.errors import TuneforgeError
from tuneforge.store import jobs
from tuneforge.store.db import Database
from tuneforge.store.tables import Job

log = logging.getLogger("tuneforge.worker")


class JobStopped(Exception):
    """The job was cancelled, or is no longer this worker's: stop without writing a result."""


@dataclass
class JobContext:
    """What a job runner gets: its job, the store, and a way to report."""

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


def runners() -> dict:
    """Job kind -> runner module: `run(ctx) -> result fields`, and optionally `on_success(session, job, result)`
    and `on_failure(session, job, error)`, which run in the transaction that marks the job finished."""
    from tuneforge.worker import fine_tune, relabel

    return {"fine_tune": fine_tune, "relabel": relabel}


class Worker:
    def __init__(self, db: Database, *, worker_id: str | None = None, poll_s: float = 1.0,
                 heartbeat_s: float = 2.0, stale_after_s: float = 30.0):
        self.db = db
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_s, self.heartbeat_s, self.stale_after_s = poll_s, heartbeat_s, stale_after_s
        self.runners = runners()
        self.current: JobContext | None = None
        self.shutting_down = False

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("worker %s polling for jobs", self.worker_id)
        while not stop.is_set():
            if not self.run_one():
                stop.wait(self.poll_s)

    def run_one(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        with self.db.session() as s:
            for job_id in jobs.requeue_stale(s, self.stale_after_s):
                log.warning("requeued %s: its worker stopped heartbeating", job_id)
        with self.db.session() as s:
            job = jobs.claim(s, self.worker_id, tuple(self.runners))
        if job is None:
            return False
        log.info("running %s (attempt %d)", job.id, job.attempts)
        self._run(job)
        return True

    def shutdown(self, stop: threading.Event) -> None:
        """Stop polling; a running job stops at its next step and goes back to the queue at once."""
        self.shutting_down = True
        stop.set()
        if self.current is not None:
            self.current.stop.set()

    def _run(self, job: Job) -> None:
        ctx = self.current = JobContext(job, self.db, self.worker_id)
        beat = threading.Thread(target=self._heartbeat, args=(ctx,), daemon=True)
        beat.start()
        status, result, error = "failed", None, None
        try:
            result = self.runners[job.kind].run(ctx)
            status = "succeeded"
        except JobStopped:
            log.info("%s stopped (%s)", job.id, "shutdown" if self.shutting_down else "cancelled or taken over")
            status = None
            if self.shutting_down:
                with self.db.session() as s:
                    jobs.release(s, job.id, self.worker_id)
        except TuneforgeError as exc:
            error = {"code": exc.code or "invalid_request", "message": str(exc), "param": exc.param}
        except Exception as exc:
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "param": None}
        except BaseException:  # Ctrl-C mid-job: hand the job back rather than leave it to the stale timeout
            with self.db.session() as s:
                jobs.release(s, job.id, self.worker_id)
            raise
        finally:
            ctx.stop.set()
            beat.join()
            self.current = None
        if status is not None:
            with self.db.session() as s:
                done = jobs.finish(s, job.id, self.worker_id, status, result=result, error=error)
                hook = getattr(self.runners[job.kind], "on_success" if status == "succeeded" else "on_failure", None)
                if done and hook is not None:
                    hook(s, job, result if status == "succeeded" else error)

    def _heartbeat(self, ctx: JobContext) -> None:
        while not ctx.stop.wait(self.heartbeat_s):
            with self.db.session() as s:
                alive = jobs.heartbeat(s, ctx.job.id, self.worker_id)
            if not alive:
                ctx.stop.set()
