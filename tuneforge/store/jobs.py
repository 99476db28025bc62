"""The job queue: one table for all long work, claimed atomically, kept alive by heartbeats.

Claiming is one UPDATE whose WHERE picks the oldest queued job whose project is under its limit of running
jobs (`tuneforge.limits`). On Postgres the pick is `FOR UPDATE SKIP LOCKED`, and claims take a transaction
lock in turn, so two workers cannot both start a project's last allowed job; SQLite runs one writer at a time,
which makes the same statement atomic there. Every status change is conditional in SQL on the status it
changes from, and every later write by a worker on the job still being `running` under its worker id: a job
that was cancelled, or requeued because its worker stopped heartbeating, cannot be overwritten by the worker
that lost it, and a job that just finished cannot be cancelled.

A job submitted while another job runs (in the worker, inside its `run`) is that job's child (a bake-off's
fine-tunes): it runs inside its parent, so it counts against neither the queue's nor the running jobs' limit.

The queue knows nothing of what a job does: ids, event ids and wording come from the job's kind
(`tuneforge.jobs.registry`), and what a job needs and makes lives in its kind's module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from tuneforge import limits, paths
from tuneforge.errors import Conflict, NotFound
from tuneforge.jobs import registry as kinds
from tuneforge.store import quotas
from tuneforge.store.db import new_id, now
from tuneforge.store.tables import Job, JobEvent

ACTIVE = ("validating_files", "queued", "running")
FINAL = ("succeeded", "failed", "cancelled")
MAX_ATTEMPTS = 3
PG_CLAIM_LOCK = 7_362_902  # pg_advisory_xact_lock key: claims one at a time, so running-job limits hold

_running: ContextVar[str | None] = ContextVar("tuneforge_running_job", default=None)


@contextmanager
def running(job_id: str) -> Iterator[None]:
    """The worker runs a job's `run` in this: jobs submitted meanwhile are its children."""
    token = _running.set(job_id)
    try:
        yield
    finally:
        _running.reset(token)


def jobs_dir() -> Path:
    return paths.data_dir() / "jobs"


def create(s: Session, *, project_id: str, kind: str, spec: dict, job_id: str | None = None) -> Job:
    """A job of this kind, not yet queued (`enqueue` it in the same transaction once it is validated).
    RateLimited when the project has too many jobs waiting, or is over its disk quota."""
    parent_id = _running.get()
    if parent_id is None:
        quotas.check_queued(s, project_id)
    quotas.check_disk(s, project_id)
    job_id = job_id or new_id(kinds.get(kind).id_prefix)
    job = Job(
        id=job_id, project_id=project_id, kind=kind, status="validating_files", created_at=now(), spec=spec,
        result={}, attempts=0, out_dir=str(jobs_dir() / job_id), parent_id=parent_id,
    )
    s.add(job)
    s.flush()
    add_event(s, job.id, kinds.get(kind).created_message)
    return job


def enqueue(s: Session, job_id: str) -> None:
    s.execute(update(Job).where(Job.id == job_id, Job.status == "validating_files").values(status="queued"))
    add_event(s, job_id, _kind(s, job_id).queued_message)


def submit(s: Session, *, project_id: str, kind: str, spec: dict, job_id: str | None = None) -> Job:
    """Create and queue a job whose request was validated: what a kind's `accept` ends with."""
    job = create(s, project_id=project_id, kind=kind, spec=spec, job_id=job_id)
    enqueue(s, job.id)
    s.flush()
    s.refresh(job)
    return job


def get(s: Session, job_id: str, *, project_id: str, kind: str | None = None) -> Job:
    """The project's job (of this kind, when given); NotFound worded by the kind otherwise."""
    job = s.get(Job, job_id)
    if job is None or job.project_id != project_id or (kind is not None and job.kind != kind):
        if kind is not None:
            raise kinds.get(kind).not_found(job_id)
        raise NotFound(f"No job found with id {job_id}", param="job_id", code="not_found")
    return job


def list_(s: Session, *, project_id: str, after: str | None, limit: int,
          kind: str | None = None) -> tuple[list[Job], bool]:
    """Newest first, of one kind (or all); `after` is the last id of the previous page."""
    q = select(Job).where(Job.project_id == project_id).order_by(Job.created_at.desc(), Job.id.desc())
    if kind is not None:
        q = q.where(Job.kind == kind)
    if after:
        anchor = s.get(Job, after)
        if anchor is not None and anchor.project_id == project_id:
            q = q.where((Job.created_at < anchor.created_at)
                        | ((Job.created_at == anchor.created_at) & (Job.id < anchor.id)))
    rows = list(s.scalars(q.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def cancel(s: Session, job_id: str, *, project_id: str, kind: str | None = None) -> Job:
    """Cancel a job that has not finished, and its unfinished children; a running one stops at its worker's
    next heartbeat."""
    job = get(s, job_id, project_id=project_id, kind=kind)
    moved = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                      .values(status="cancelled", finished_at=now())).rowcount
    if not moved:  # it ended first (perhaps a moment ago, while we looked)
        s.refresh(job)
        raise Conflict(f"Job {job_id} has already {job.status}; only unfinished jobs can be cancelled",
                       code="invalid_state")
    add_event(s, job_id, "Job cancelled")
    _cancel_children(s, job_id)
    s.refresh(job)
    return job


def _cancel_children(s: Session, job_id: str) -> None:
    """A job that ended without succeeding takes its unfinished children with it (and theirs)."""
    for child in list(s.scalars(select(Job).where(Job.parent_id == job_id, Job.status.not_in(FINAL)))):
        s.execute(update(Job).where(Job.id == child.id, Job.status.not_in(FINAL))
                  .values(status="cancelled", finished_at=now()))
        add_event(s, child.id, f"Job cancelled: its parent {job_id} ended")
        _cancel_children(s, child.id)


def children(s: Session, job_id: str) -> list[Job]:
    """The jobs a job started (a bake-off's fine-tunes, evals and merge), oldest first."""
    return list(s.scalars(select(Job).where(Job.parent_id == job_id).order_by(Job.created_at, Job.id)))


# --- the worker's side
def claim(s: Session, worker_id: str, kinds: tuple[str, ...], *, job_id: str | None = None) -> Job | None:
    """Take the oldest queued job of these kinds whose project runs fewer top-level jobs than its limit (a
    child, which runs inside its running parent, is always taken), or this job when it is queued (a child
    its parent's worker runs); None when there is none."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_CLAIM_LOCK})
    queued, running_ = aliased(Job), aliased(Job)
    pick = select(queued.id).where(queued.status == "queued", queued.kind.in_(kinds))
    if job_id is not None:
        pick = pick.where(queued.id == job_id)
    else:
        busy = (select(func.count()).select_from(running_).where(
            running_.project_id == queued.project_id, running_.status == "running", running_.parent_id.is_(None))
            .scalar_subquery())
        pick = pick.where(or_(queued.parent_id.is_not(None), busy < limits.current().project_running_jobs))
    pick = pick.order_by(queued.created_at, queued.id).limit(1).with_for_update(skip_locked=True).scalar_subquery()
    started = time.time()
    claimed = s.execute(
        update(Job).where(Job.id == pick, Job.status == "queued")
        .values(status="running", worker_id=worker_id, heartbeat_at=started, attempts=Job.attempts + 1)
        .returning(Job.id)
    ).scalar()
    if claimed is None:
        return None
    job = s.get(Job, claimed)
    s.refresh(job)
    job.result = {**(job.result or {}), "attempt_started_at": started}  # for the job's wall time (`wall_s`)
    add_event(s, job.id, f"Job started on worker {worker_id} (attempt {job.attempts})",
              data={"worker": worker_id, "attempt": job.attempts})
    return job


def heartbeat(s: Session, job_id: str, worker_id: str, at: float | None = None) -> bool:
    """Record that the worker is alive (as of `at`, default now); False when the job is no longer this
    worker's to run."""
    result = s.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(heartbeat_at=time.time() if at is None else at)
    )
    return result.rowcount == 1


def wall_s(job: Job, until: float | None = None) -> float:
    """The job's wall time over its attempts: the earlier ones', and the current one's until `until`."""
    result = job.result or {}
    earlier = float(result.get("wall_s", 0.0))
    if until is None or "attempt_started_at" not in result:
        return earlier
    return earlier + max(0.0, until - float(result["attempt_started_at"]))


def requeue_stale(s: Session, timeout_s: float) -> list[str]:
    """Put back running jobs whose worker has not heartbeated for `timeout_s`; fail those out of attempts."""
    cutoff = time.time() - timeout_s
    stale = list(s.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)))
    moved = []
    for job in stale:
        worker = job.worker_id  # the update below clears it on the loaded row too
        if job.attempts >= MAX_ATTEMPTS:
            done = finish(s, job.id, job.worker_id, "failed", error={
                "code": "worker_lost", "param": None,
                "message": f"The job's worker stopped responding {job.attempts} times; giving up.",
            }, where=(Job.heartbeat_at < cutoff,))
        else:
            result = {**(job.result or {}), "wall_s": wall_s(job, until=job.heartbeat_at)}
            done = s.execute(
                update(Job).where(Job.id == job.id, Job.status == "running", Job.heartbeat_at < cutoff)
                .values(status="queued", worker_id=None, result=result)
            ).rowcount == 1
            if done:
                add_event(s, job.id, f"Worker {worker} stopped responding; job requeued", level="warn",
                          data={"worker": worker})
        if done:
            moved.append(job.id)
    return moved


def release(s: Session, job_id: str, worker_id: str) -> None:
    """A worker that is shutting down hands its running job back to the queue (it resumes elsewhere)."""
    job = s.get(Job, job_id)
    result = {**(job.result or {}), "wall_s": wall_s(job, until=time.time())}
    moved = s.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(status="queued", worker_id=None, result=result)
    ).rowcount
    if moved:
        add_event(s, job_id, f"Worker {worker_id} shut down; job requeued", level="warn", data={"worker": worker_id})


def finish(s: Session, job_id: str, worker_id: str | None, status: str, *, result: dict | None = None,
           error: dict | None = None, where: tuple = ()) -> bool:
    """End a running job of this worker's (and meeting `where`); False when it is not, or no longer, that."""
    values = {"status": status, "finished_at": now(), "error": error}
    if result is not None:
        values["result"] = result
    ok = s.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running", *where)
        .values(**values)
    ).rowcount == 1
    if ok:
        message = {"succeeded": "The job has successfully completed", "cancelled": "Job cancelled"}.get(
            status, f"The job failed: {(error or {}).get('message', '')}")
        add_event(s, job_id, message, level="error" if status == "failed" else "info")
        if status != "succeeded":
            _cancel_children(s, job_id)
    return ok


def made_progress(s: Session, job_id: str, worker_id: str) -> None:
    """A long job that finished a step (a bake-off's child) starts its count of attempts again: the limit is
    on attempts in a row that got nowhere."""
    s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
              .values(attempts=1))


def set_result(s: Session, job_id: str, worker_id: str, **fields) -> bool:
    """Add to a running job's result, while it is still this worker's."""
    job = s.get(Job, job_id)
    if job is None:
        return False
    return s.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(result={**(job.result or {}), **fields})
    ).rowcount == 1


# --- events
def add_event(s: Session, job_id: str, message: str, *, level: str = "info", type: str = "message",
              data: dict | None = None) -> JobEvent:
    ev = JobEvent(id=new_id(_kind(s, job_id).event_prefix), job_id=job_id, created_at=now(), level=level,
                  type=type, message=message, data=data)
    s.add(ev)
    return ev


def metric_events(s: Session, job_id: str, *, upto: int | None = None, limit: int = 2000) -> list[JobEvent]:
    """A job's newest `limit` metrics events (none after event `upto`, a seq), oldest first: a loss curve's
    points, as the console draws them."""
    q = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
    if upto is not None:
        q = q.where(JobEvent.seq <= upto)
    return list(reversed(s.scalars(q.order_by(JobEvent.seq.desc()).limit(limit)).all()))


def _kind(s: Session, job_id: str) -> kinds.JobKind:
    """A job's kind (its row is usually in the session already: no query)."""
    return kinds.get(s.get(Job, job_id).kind)


def events(s: Session, job_id: str, *, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI lists them; `after` is the id of the last event of the previous page."""
    q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc())
    if after:
        anchor = s.scalar(select(JobEvent.seq).where(JobEvent.id == after))
        if anchor is not None:
            q = q.where(JobEvent.seq < anchor)
    rows = list(s.scalars(q.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
