"""The worker process: poll the queue, run one job at a time, heartbeat while it runs.

A heartbeat thread marks the job alive every few seconds; when the mark fails (the job was cancelled, or
requeued after this worker looked dead) it tells the job to stop, which it does at its next progress event.
Before claiming, a worker requeues jobs whose worker stopped heartbeating: a SIGKILLed worker's job goes
back to the queue and, since training resumes from the newest checkpoint in the job's folder, continues
where it left off.

What a job does is its kind's business (`tuneforge.jobs`): the loop claims every registered kind and calls
the kind's `run`, then its `on_success` / `on_failure` in the transaction that records the outcome.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import traceback

from tuneforge.errors import TuneforgeError
from tuneforge.jobs import registry as kinds
from tuneforge.jobs.context import JobContext, JobStopped
from tuneforge.store import jobs
from tuneforge.store.db import Database
from tuneforge.store.tables import Job

CHILD_POLL_S = 2.0

log = logging.getLogger("tuneforge.worker")


class Worker:
    def __init__(self, db: Database, *, worker_id: str | None = None, poll_s: float = 1.0,
                 heartbeat_s: float = 2.0, stale_after_s: float = 30.0):
        self.db = db
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_s, self.heartbeat_s, self.stale_after_s = poll_s, heartbeat_s, stale_after_s
        self.kinds = kinds.names()  # the kinds this worker claims: every registered one
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
            job = jobs.claim(s, self.worker_id, self.kinds)
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

    def _run(self, job: Job, parent: JobContext | None = None) -> None:
        """Run a claimed job to its end; a child runs inside its parent and stops when the parent does."""
        kind = kinds.get(job.kind)
        ctx = JobContext(job, self.db, self.worker_id, parent=parent)
        ctx.run_child = functools.partial(self._run_child, ctx)
        if parent is None:
            self.current = ctx
        beat = threading.Thread(target=self._heartbeat, args=(ctx,), daemon=True)
        beat.start()
        status, result, error = "failed", None, None
        try:
            result = kind.run(ctx)
            status = "succeeded"
        except JobStopped:
            log.info("%s stopped (%s)", job.id, "shutdown" if self.shutting_down else "cancelled or taken over")
            status = None
            if self.shutting_down or parent is not None:  # a child goes back to the queue with its parent
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
            if parent is None:
                self.current = None
        if status is not None:
            with self.db.session() as s:
                if jobs.finish(s, job.id, self.worker_id, status, result=result, error=error):
                    if status == "succeeded":
                        kind.on_success(s, job, result)
                    else:
                        kind.on_failure(s, job, error)

    def _run_child(self, parent: JobContext, job_id: str) -> Job:
        """A child job, run here when it is queued (so one worker can run a bake-off and all it needs), or
        waited for while another worker runs it; its row once it has ended."""
        while True:
            parent.check()
            with self.db.session() as s:
                jobs.requeue_stale(s, self.stale_after_s)
            with self.db.session() as s:
                child = jobs.claim(s, self.worker_id, self.kinds, job_id=job_id)
            if child is not None:
                log.info("running %s inside %s (attempt %d)", child.id, parent.job.id, child.attempts)
                self._run(child, parent)
                continue
            with self.db.session() as s:
                row = s.get(Job, job_id)
                if row.status in jobs.FINAL:
                    return row
            parent.stop.wait(CHILD_POLL_S)

    def _heartbeat(self, ctx: JobContext) -> None:
        while not ctx.stop.wait(self.heartbeat_s):
            if ctx.parent is not None and ctx.parent.stop.is_set():
                ctx.stop.set()
                return
            with self.db.session() as s:
                alive = jobs.heartbeat(s, ctx.job.id, self.worker_id)
            if not alive:
                ctx.stop.set()
