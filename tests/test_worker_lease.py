"""The worker's lease on its job: a worker whose database writes fail stops (writing nothing more, checkpoints
included) before another worker may take the job over, and the job's checkpoints stay consistent."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import toy_rows, write_jsonl
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tuneforge.jobs import fine_tune, registry
from tuneforge.jobs.registry import JobKind
from tuneforge.store import jobs, projects
from tuneforge.store.db import Database
from tuneforge.store.tables import Job, JobEvent
from tuneforge.training import checkpoint
from tuneforge.worker.loop import Worker

STALE = 5.0  # seconds without a heartbeat before a job is requeued; the lease lapses at half that


def _locked() -> OperationalError:
    return OperationalError("UPDATE jobs SET heartbeat_at=?", {}, sqlite3.OperationalError("database is locked"))


def _in_thread(name: str, fn) -> threading.Thread:
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _events(db: Database, job_id: str) -> list[JobEvent]:
    with db.session() as s:
        return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def test_a_worker_that_cannot_heartbeat_stops_before_another_resumes_its_job(data_dir, tiny_model, tmp_path,
                                                                             monkeypatch):
    db = Database()
    db.migrate()
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(64))
    spec = fine_tune.FineTuneSpec(
        model="tiny", base_model=str(tiny_model), training_file="file-x", training_path=str(data), seed=0,
        train_config={"seed": 0, "epochs": 1, "batch_size": 2, "checkpoint_every": 4, "keep_checkpoints": 10},
        fine_tuned_model="ft:tiny:p::lease",
    )
    with db.session() as s:
        job_id = jobs.submit(s, project_id=projects.get_or_create(s, "p").id, kind="fine_tune",
                             spec=spec.model_dump(mode="json")).id

    broken = threading.Event()  # from A's first checkpoint on, none of A's heartbeats gets through
    beats: list[float] = []  # A's heartbeats that got through
    writes: list[tuple[str, int, float]] = []  # (worker, step, when) of each checkpoint committed
    requeued: list[float] = []

    real_heartbeat, real_write, real_requeue = jobs.heartbeat, checkpoint.write, jobs.requeue_stale
    real_report = fine_tune._Reporter.__call__

    def heartbeat(s, job_id, worker_id, *args, **kw):
        if worker_id == "A" and broken.is_set():
            raise _locked()
        at = time.time()
        alive = real_heartbeat(s, job_id, worker_id, *args, **kw)
        if worker_id == "A" and alive:
            beats.append(at)
        return alive

    def write(out, step, *args, **kw):
        path = real_write(out, step, *args, **kw)
        writes.append((threading.current_thread().name, step, time.time()))
        return path

    def requeue_stale(s, timeout_s):
        moved = real_requeue(s, timeout_s)
        if moved:
            requeued.append(time.time())
        return moved

    def report(self, ev):
        real_report(self, ev)
        if threading.current_thread().name == "A":
            if ev.kind == "checkpoint":
                broken.set()
            if ev.kind == "progress":
                time.sleep(0.15)  # A trains slowly: it is still mid-run when its lease lapses

    monkeypatch.setattr(jobs, "heartbeat", heartbeat)
    monkeypatch.setattr(checkpoint, "write", write)
    monkeypatch.setattr(jobs, "requeue_stale", requeue_stale)
    monkeypatch.setattr(fine_tune._Reporter, "__call__", report)

    a = Worker(Database(), worker_id="A", heartbeat_s=0.25, stale_after_s=STALE)
    b = Worker(Database(), worker_id="B", heartbeat_s=0.25, stale_after_s=STALE, poll_s=0.1)
    a_done: list[float] = []
    thread_a = _in_thread("A", lambda: (a.run_one(), a_done.append(time.time())))
    _wait(broken.is_set)
    stop_b = threading.Event()
    thread_b = _in_thread("B", lambda: b.run_forever(stop_b))
    try:
        _wait(lambda: _status(db, job_id) in jobs.FINAL)
    finally:
        stop_b.set()
        thread_b.join(timeout=30)
        thread_a.join(timeout=30)

    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.worker_id, job.attempts) == ("succeeded", "B", 2), job.error
        api = fine_tune_api(job)
    assert len(requeued) == 1 and a_done, "B took the job over once, after A had stopped"
    assert a_done[0] < requeued[0], "A stopped before B requeued its job"
    by_a = [(step, when) for who, step, when in writes if who == "A"]
    lapsed = beats[-1] + STALE / 2 + 0.2  # (+ the time a write takes from its last check to returning)
    assert by_a and all(when < lapsed for _, when in by_a), "A wrote no checkpoint after its lease lapsed"
    assert all(when < requeued[0] for _, when in by_a)
    last_a = by_a[-1][0]

    messages = [e.message for e in _events(db, job_id)]
    takeover = messages.index("Worker A stopped responding; job requeued")
    assert messages[takeover + 1] == "Job started on worker B (attempt 2)"
    started = next(m for m in messages[takeover:] if m.startswith(("Resuming", "Fine-tuning started")))
    assert started.startswith(f"Resuming from checkpoint at step {last_a}: ")
    assert [step for who, step, _ in writes if who == "B"] == list(range(last_a + 4, 33, 4))

    out = Path(job.out_dir)
    folders = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert folders == [f"step-{step:06d}" for step in range(4, 33, 4)]  # no temporary folder left behind
    for name in folders:  # each one complete, and of the step it is named for
        assert torch.load(out / "checkpoints" / name / checkpoint.STATE, weights_only=False)["step"] == int(name[5:])
    resolved = {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 1.0}  # as the trainer planned the run
    assert {k: api.hyperparameters[k] for k in resolved} == resolved


def fine_tune_api(job: Job):
    from tuneforge.server.routes.fine_tuning import to_api

    return to_api(job)


def _status(db: Database, job_id: str) -> str:
    with db.session() as s:
        return s.get(Job, job_id).status


class _Ticker(JobKind):
    """On its first attempt, ticks until stopped (or 20 s), reporting each tick: a job that would run on after
    its lease. Later attempts end at once."""

    name = "ticker"
    noun = "ticker job"

    def run(self, ctx) -> dict:
        deadline = time.time() + 20
        while ctx.job.attempts == 1 and time.time() < deadline:
            ctx.check()
            ctx.event("tick")
            time.sleep(0.05)
        return {}


class _Unwritable(Database):
    """A store whose writes fail once `broken` is set, as when its file or server becomes unwritable."""

    def __init__(self):
        super().__init__()
        self.broken = threading.Event()

    def session(self):
        if self.broken.is_set():
            raise _locked()
        return super().session()


@pytest.fixture
def ticker(monkeypatch):
    registry.names()  # the built-in kinds first
    monkeypatch.setitem(registry._kinds, _Ticker.name, _Ticker())


def test_a_worker_whose_store_becomes_unwritable_stops_in_time_and_survives(data_dir, ticker):
    db = Database()
    db.migrate()
    with db.session() as s:
        job_id = jobs.submit(s, project_id=projects.get_or_create(s, "p").id, kind="ticker", spec={}).id
    stale = 5.0  # the lease: 2.5 s; margins of seconds for a loaded CI machine
    store = _Unwritable()
    a = Worker(store, worker_id="A", heartbeat_s=0.1, stale_after_s=stale, poll_s=0.1)
    stop_a = threading.Event()
    thread_a = _in_thread("A", lambda: a.run_forever(stop_a))
    _wait(lambda: a.current is not None)
    broken_at = time.time()
    store.broken.set()
    _wait(lambda: a.current is None, timeout=stale * 2)  # stopped: within the lease, not at the 20 s deadline
    stopped_at = time.time()
    assert thread_a.is_alive(), "the worker carries on polling the store"

    b = Worker(Database(), worker_id="B", heartbeat_s=0.1, stale_after_s=stale)
    with db.session() as s:
        assert not jobs.requeue_stale(s, stale), "not stale yet when A stopped"
    assert stopped_at - broken_at < stale
    _wait(b.run_one, timeout=stale * 3)  # B requeues the job and runs it
    stop_a.set()
    thread_a.join(timeout=10)
    assert _status(db, job_id) == "succeeded"
    messages = [e.message for e in _events(db, job_id)]
    assert messages[-3:] == ["Worker A stopped responding; job requeued", "Job started on worker B (attempt 2)",
                             "The job has successfully completed"]  # nothing from A once its store failed
