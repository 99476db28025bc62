"""The worker process: poll the queue, run one job at a time, heartbeat while it runs.

A heartbeat thread marks the job alive every few seconds; when the mark fails (the job was cancelled, or
requeued after this worker looked dead) it tells the job to stop, which it does at its next progress event.
Before claiming, a worker requeues jobs whose worker stopped heartbeating: a SIGKILLed worker's job goes
back to the queue and, since training resumes from the newest checkpoint in the job's folder, continues
where it left off.

Each heartbeat renews the worker's lease on its job (`JobContext`). A heartbeat that cannot be written (the
database is locked or gone) is retried at the next beat; once half the stale limit has passed since the last
one that got through, the lease has lapsed and the job stops without writing anything more, checkpoints
included: another worker may requeue it only after the whole stale limit, so two workers never write into
one job's folder. The heartbeat thread also fails a job that is over its wall-time limit
(`tuneforge.limits`, `job_hours`, over all its attempts).

What a job does is its kind's business (`tuneforge.jobs`): the loop claims every registered kind and calls
the kind's `run`, then its `on_success` / `on_failure` in the transaction that records the outcome.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback

from tuneforge import limits
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
        # the lease holds for half the stale limit: renew it at least four times in that
        self.poll_s, self.heartbeat_s, self.stale_after_s = poll_s, min(heartbeat_s, stale_after_s / 8), stale_after_s
        self.kinds = kinds.names()  # the kinds this worker claims: every registered one
        self.current: JobContext | None = None
        self.shutting_down = False

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("worker %s polling for jobs", self.worker_id)
        while not stop.is_set():
            try:
                busy = self.run_one()
            except Exception as exc:  # the store is unreachable or locked: try again, rather than die
                log.error("worker %s: %s: %s", self.worker_id, type(exc).__name__, str(exc).splitlines()[0])
                busy = False
            if not busy:
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
        ctx = JobContext(job, self.db, self.worker_id, parent=parent, lease_s=self.stale_after_s / 2,
                         renewed_at=job.heartbeat_at)
        ctx.run_child = functools.partial(self._run_child, ctx)
        if parent is None:
            self.current = ctx
        beat = threading.Thread(target=self._heartbeat, args=(ctx,), daemon=True)
        beat.start()
        status, result, error = "failed", None, None
        try:
            with jobs.running(job.id):
                result = kind.run(ctx)
            status = "succeeded"
        except JobStopped:
            status, error = ("failed", ctx.failure) if ctx.failure and not ctx.lost else (None, None)
            log.info("%s stopped (%s)", job.id, "lease lapsed" if ctx.lost else "over its limit" if error
                     else "shutdown" if self.shutting_down else "cancelled or taken over")
            if status is None and not ctx.lost and (self.shutting_down or parent is not None):
                self._record(job, lambda s: jobs.release(s, job.id, self.worker_id))  # a child: back with its parent
        except TuneforgeError as exc:
            error = {"code": exc.code or "invalid_request", "message": str(exc), "param": exc.param}
        except Exception as exc:
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "param": None}
        except BaseException:  # Ctrl-C mid-job: hand the job back rather than leave it to the stale timeout
            if not ctx.lost:
                self._record(job, lambda s: jobs.release(s, job.id, self.worker_id))
            raise
        finally:
            ctx.stop.set()
            beat.join()
            if parent is None:
                self.current = None
        if ctx.lapsed():  # another worker may have the job by now: its outcome is not ours to write
            log.warning("%s: lease lapsed; the job is left for another worker to resume", job.id)
        elif status is not None:
            self._record(job, lambda s: self._finish(s, kind, job, status, result, error))

    def _finish(self, s, kind, job: Job, status: str, result: dict | None, error: dict | None) -> None:
        if jobs.finish(s, job.id, self.worker_id, status, result=result, error=error):
            if status == "succeeded":
                kind.on_success(s, job, result)
            else:
                kind.on_failure(s, job, error)

    def _record(self, job: Job, write) -> None:
        """Write a job's outcome; if the store cannot take it, the job goes back to the queue when it is found
        stale (and resumes from its checkpoints)."""
        try:
            with self.db.session() as s:
                write(s)
        except Exception as exc:
            log.error("%s: could not record its outcome (%s: %s); it will be requeued once found stale", job.id,
                      type(exc).__name__, str(exc).splitlines()[0])

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
        """Renew the job's lease every `heartbeat_s`; stop the job when it is no longer this worker's, when the
        lease lapses, or when the job is over its wall-time limit."""
        hours = limits.current().job_hours
        while not ctx.stop.wait(self.heartbeat_s):
            if ctx.parent is not None and ctx.parent.stop.is_set():
                ctx.stop.set()
                return
            at = time.time()
            if jobs.wall_s(ctx.job, until=at) > hours * 3600:
                ctx.fail({"code": "job_time_limit_exceeded", "param": None, "message":
                          f"The job ran for more than its limit of {hours:g} hours (over all its attempts): "
                          "split the work into smaller jobs, or ask the operator to raise TUNEFORGE_JOB_HOURS."})
                return
            try:
                with self.db.session() as s:
                    alive = jobs.heartbeat(s, ctx.job.id, self.worker_id, at=at)
            except Exception as exc:  # locked or unreachable: retry at the next beat while the lease holds
                log.warning("%s: heartbeat failed (%s: %s)", ctx.job.id, type(exc).__name__,
                            str(exc).splitlines()[0])
                if ctx.lapsed():
                    ctx.lose()
                    return
                continue
            if not alive:
                ctx.stop.set()
                return
            ctx.renewed(at)
