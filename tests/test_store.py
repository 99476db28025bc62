"""The store: migrations match the tables, claims are exclusive, stale jobs come back, keys are hashed."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text, update

from tuneforge.errors import Conflict, NotFound, Unauthorized
from tuneforge.store import jobs, projects
from tuneforge.store.db import Database
from tuneforge.store.tables import ApiKey, Base, Job


def test_migrations_build_exactly_the_tables(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    db.migrate()  # idempotent


def _queue(db: Database, n: int) -> tuple[str, list[str]]:
    with db.session() as s:
        project = projects.get_or_create(s, "p")
        ids = []
        for _ in range(n):
            job = jobs.create(s, project_id=project.id, kind="fine_tune", spec={"x": 1})
            jobs.enqueue(s, job.id)
            ids.append(job.id)
    return project.id, ids


def test_concurrent_workers_never_claim_a_job_twice(db, monkeypatch):
    from tuneforge import limits  # one project's 12 jobs may all run at once here

    monkeypatch.setattr(limits, "_current", limits.Limits(project_running_jobs=100))
    _project, ids = _queue(db, 12)
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with db.session() as s:
                job = jobs.claim(s, name, ("fine_tune",))
            if job is None:
                return
            with lock:
                claimed.append((job.id, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in claimed) == sorted(ids)  # each job once, none lost
    with db.session() as s:
        assert {j.attempts for j in s.scalars(select(Job))} == {1}


def test_stale_jobs_are_requeued_then_failed_after_max_attempts(db):
    _project, (job_id,) = _queue(db, 1)
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        with db.session() as s:
            assert jobs.claim(s, f"w{attempt}", ("fine_tune",)).attempts == attempt
        with db.session() as s:
            assert jobs.heartbeat(s, job_id, f"w{attempt}")
            assert not jobs.heartbeat(s, job_id, "someone-else")
            s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=time.time() - 100))
        with db.session() as s:
            assert jobs.requeue_stale(s, timeout_s=10) == [job_id]
        with db.session() as s:
            job = s.get(Job, job_id)
            if attempt < jobs.MAX_ATTEMPTS:
                assert job.status == "queued" and job.worker_id is None
                # the worker that lost the job can no longer finish it
                assert not jobs.finish(s, job_id, f"w{attempt}", "succeeded", result={})
            else:
                assert job.status == "failed" and job.error["code"] == "worker_lost"


def test_cancel_and_project_isolation(db):
    project_id, (job_id,) = _queue(db, 1)
    with db.session() as s:
        other = projects.get_or_create(s, "other")
        with pytest.raises(NotFound):
            jobs.cancel(s, job_id, project_id=other.id)
        assert jobs.cancel(s, job_id, project_id=project_id).status == "cancelled"
    with db.session() as s:
        assert jobs.claim(s, "w", ("fine_tune",)) is None  # a cancelled job is never run
        with pytest.raises(Conflict):
            jobs.cancel(s, job_id, project_id=project_id)


def test_keys_are_stored_hashed(db):
    with db.session() as s:
        key = projects.create_key(s, project="acme")
    with db.session() as s:
        assert projects.authenticate(s, key).name == "acme"
        stored = [row.hash for row in s.scalars(select(ApiKey))]
        dump = " ".join(str(v) for v in s.execute(text("SELECT * FROM api_keys")).all())
        assert key not in dump and len(stored) == 1
        for bad in (None, "", key + "x"):
            with pytest.raises(Unauthorized):
                projects.authenticate(s, bad)


@pytest.mark.parametrize("url", ["mysql://x", "postgresql://x:secret@127.0.0.1:1/nope", "nonsense"])
def test_unusable_database_urls_are_one_line_errors(url):
    from helpers import cli

    proc = cli("keys", "create", "--database-url", url, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "secret" not in proc.stderr  # passwords never reach messages


def test_files_page_by_keyset_in_either_order(db):
    from tuneforge.store import files

    with db.session() as s:
        pid = projects.get_or_create(s, "p").id
        made = [files.create(s, project_id=pid, filename=f"f{i}.jsonl", purpose="evals", content=b"{}\n").id
                for i in range(5)]
        other = projects.get_or_create(s, "q").id
        files.create(s, project_id=other, filename="theirs.jsonl", purpose="evals", content=b"{}\n")
    pages = {}
    for order in ("desc", "asc"):
        seen, after = [], None
        while True:
            with db.session() as s:
                page = [f.id for f in files.list_(s, project_id=pid, after=after, limit=2, order=order)]
            if not page:
                break
            seen += page
            after = page[-1]
        with db.session() as s:
            whole = [f.id for f in files.list_(s, project_id=pid, order=order)]
        assert seen == whole and sorted(seen) == sorted(made), order
        pages[order] = seen
    assert pages["asc"] == pages["desc"][::-1]
