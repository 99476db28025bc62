"""Jobs are bounded and their status changes guarded: per-project quotas (jobs waiting, jobs running, disk, a
job's wall time), upper bounds on every hyperparameter, cancel that cannot undo a finished job; and what
OpenAI clients expect of jobs: resolved hyperparameters, checkpoints retrievable as models."""

from __future__ import annotations

import json
import time
from pathlib import Path

import annotated_types
import openai
import pytest
from helpers import toy_rows, write_jsonl

from tuneforge import limits
from tuneforge.errors import Conflict, RateLimited, UserError
from tuneforge.jobs import fine_tune, registry
from tuneforge.jobs.registry import JobKind
from tuneforge.store import jobs, models, projects
from tuneforge.store.db import Database
from tuneforge.store.tables import Job
from tuneforge.training.config import TrainConfig
from tuneforge.worker.loop import Worker


def _limit(monkeypatch, **values) -> None:
    monkeypatch.setattr(limits, "_current", limits.Limits(**values))


def _status(db: Database, job_id: str) -> str:
    with db.session() as s:
        return s.get(Job, job_id).status


# --- status changes
def test_cancel_cannot_flip_a_job_that_finished_while_it_looked(db):
    with db.session() as s:
        project_id = projects.get_or_create(s, "p").id
        job_id = jobs.submit(s, project_id=project_id, kind="fine_tune", spec={}).id
    with db.session() as s:
        assert jobs.claim(s, "w", ("fine_tune",)).id == job_id
    with db.session() as s:
        seen = jobs.get(s, job_id, project_id=project_id)  # what cancel reads first (and keeps, in the session)
        assert seen.status == "running"
        with db.session() as other:  # the worker finishes it meanwhile
            assert jobs.finish(other, job_id, "w", "succeeded", result={"fine_tuned_model": "ft:x"})
        with pytest.raises(Conflict, match="has already succeeded") as err:
            jobs.cancel(s, job_id, project_id=project_id)
        assert err.value.code == "invalid_state"
    assert _status(db, job_id) == "succeeded"


# --- the queue's quotas
def test_a_project_at_its_running_limit_waits_while_children_of_its_jobs_still_run(db, monkeypatch):
    _limit(monkeypatch, project_running_jobs=1, project_queued_jobs=2)
    with db.session() as s:
        busy, other = projects.get_or_create(s, "busy").id, projects.get_or_create(s, "other").id
        first, second = (jobs.submit(s, project_id=busy, kind="fine_tune", spec={}).id for _ in range(2))
        with pytest.raises(RateLimited, match="2 jobs waiting to run") as err:
            jobs.submit(s, project_id=busy, kind="fine_tune", spec={})
        assert err.value.code == "too_many_queued_jobs" and err.value.retry_after > 0
        theirs = jobs.submit(s, project_id=other, kind="fine_tune", spec={}).id

    def claim(job_id: str | None = None) -> str | None:
        with db.session() as s:
            job = jobs.claim(s, "w", ("fine_tune",), job_id=job_id)
            return job.id if job else None

    started = {claim(), claim()}
    assert claim() is None  # `busy` runs one job: its other one waits, another project's does not
    assert theirs in started and len(started & {first, second}) == 1
    (running,), (waiting,) = started - {theirs}, {first, second} - started
    with db.session() as s:  # the running job submits children: they are held by neither limit
        with jobs.running(running):
            children = [jobs.submit(s, project_id=busy, kind="fine_tune", spec={}).id for _ in range(3)]
        assert {s.get(Job, c).parent_id for c in children} == {running}
    assert claim(children[0]) == children[0]  # run inside its parent, by id
    assert {claim(), claim()} == set(children[1:])  # or by any worker
    assert claim() is None
    with db.session() as s:
        assert jobs.finish(s, running, "w", "succeeded", result={})
    assert claim() == waiting  # its first job done, the project's next one runs


def test_a_job_over_its_time_limit_fails_counting_every_attempt(data_dir, monkeypatch):
    _limit(monkeypatch, job_hours=1.0 / 3600)  # one second, over all attempts
    registry.names()
    monkeypatch.setitem(registry._kinds, _Sleeper.name, _Sleeper())
    db = Database()
    db.migrate()
    with db.session() as s:
        job_id = jobs.submit(s, project_id=projects.get_or_create(s, "p").id, kind="sleeper", spec={}).id
    with db.session() as s:  # a first attempt, which started 100 s ago; then its worker shuts down
        job = jobs.claim(s, "w0", ("sleeper",))
        job.result = {**job.result, "attempt_started_at": time.time() - 100}
    with db.session() as s:
        jobs.release(s, job_id, "w0")
        assert s.get(Job, job_id).result["wall_s"] >= 100
    started = time.time()
    assert Worker(db, worker_id="w1", heartbeat_s=0.05).run_one()
    assert time.time() - started < 1  # the limit: the first attempt's time counted
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.attempts == 2
        assert job.error["code"] == "job_time_limit_exceeded"
        assert "ran for more than its limit" in job.error["message"]


class _Sleeper(JobKind):
    name = "sleeper"
    noun = "sleeper job"

    def run(self, ctx) -> dict:
        deadline = time.time() + 3
        while time.time() < deadline:
            ctx.check()
            time.sleep(0.02)
        return {}


def test_a_fine_tune_whose_checkpoints_fill_the_disk_quota_fails_and_reports_its_plan(data_dir, tiny_model,
                                                                                       tmp_path, monkeypatch):
    db = Database()
    db.migrate()
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(16))
    spec = fine_tune.FineTuneSpec(
        model="tiny", base_model=str(tiny_model), training_file="file-x", training_path=str(data), seed=0,
        train_config={"seed": 0, "batch_size": 4, "checkpoint_every": 2}, fine_tuned_model="ft:tiny:p::disk",
    )
    _limit(monkeypatch, project_disk_gb=50_000 / 2**30)  # 50 kB: less than one checkpoint of the tiny model
    with db.session() as s:
        job_id = jobs.submit(s, project_id=projects.get_or_create(s, "p").id, kind="fine_tune",
                             spec=spec.model_dump(mode="json")).id
    assert Worker(db, worker_id="w").run_one()
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.error["code"] == "disk_quota_exceeded", job.error
        assert "over its quota of" in job.error["message"]
        hyper = fine_tune_api(job).hyperparameters
    assert not list(Path(job.out_dir, "checkpoints").iterdir())  # the checkpoint over the quota was not kept
    # 16 examples: auto picks 20 epochs' worth, capped at 10; batch size as asked; the default learning rate
    assert (hyper["n_epochs"], hyper["batch_size"], hyper["learning_rate_multiplier"]) == (10, 4, 1.0)


def fine_tune_api(job: Job):
    from tuneforge.server.routes.fine_tuning import to_api

    return to_api(job)


# --- through the API
@pytest.fixture
def api(data_dir):
    from fastapi.testclient import TestClient

    from tuneforge.server.app import create_app

    db = Database()
    db.migrate()
    with db.session() as s:
        key, other_key = projects.create_key(s, project="acme"), projects.create_key(s, project="globex")
    with TestClient(create_app(db)) as http:
        def client(k: str = key) -> openai.OpenAI:
            return openai.OpenAI(api_key=k, base_url=str(http.base_url) + "/v1", http_client=http, max_retries=0)

        yield db, client(), client(other_key)


def _upload(client: openai.OpenAI) -> str:
    content = "".join(json.dumps(r) + "\n" for r in toy_rows(8)).encode()
    return client.files.create(file=("train.jsonl", content), purpose="fine-tune").id


def test_hyperparameters_over_their_bounds_are_refused_naming_the_field(api):
    _db, client, _other = api
    file_id = _upload(client)
    for field, value in (("lora_rank", 257), ("keep_checkpoints", 11), ("max_length", 32769),
                         ("pack_tokens", 65537), ("token_budget", 10**10 + 1)):
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id,
                                           hyperparameters={field: value})
        assert err.value.param == f"hyperparameters.{field}", field
        assert "less than or equal" in err.value.message
    # every numeric hyperparameter the API accepts has an upper bound
    for name in TrainConfig.hyperparameters():
        info = TrainConfig.model_fields[name]
        if info.annotation in (int, float, int | None, float | None):
            assert any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in info.metadata), name
    with pytest.raises(UserError, match="lora_alpha"):
        fine_tune.train_config({"lora_alpha": 4096}, seed=0)


def test_jobs_over_the_queue_or_disk_quota_get_429(api, monkeypatch):
    _db, client, other = api
    file_id = _upload(client)
    _limit(monkeypatch, project_queued_jobs=1)
    client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id)
    with pytest.raises(openai.RateLimitError) as err:
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id)
    assert err.value.code == "too_many_queued_jobs" and int(err.value.response.headers["retry-after"]) > 0
    other.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=_upload(other))  # not globex's

    _limit(monkeypatch, project_disk_gb=100 / 2**30)  # 100 bytes: acme's upload alone is more
    with pytest.raises(openai.RateLimitError) as err:
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id)
    assert err.value.code == "disk_quota_exceeded" and "GB of disk, over its quota" in err.value.message


def test_a_checkpoint_is_retrievable_as_a_model(api, tmp_path):
    db, client, other = api
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=_upload(client))
    name = f"ft:smollm2-135m-instruct:acme::{job.id[6:18]}:ckpt-step-2"
    folder = tmp_path / "step-000002"
    folder.mkdir()
    with db.session() as s:
        models.add_checkpoint(s, job_id=job.id, step=2, model_name=name, path=str(folder), metrics={})
    model = client.models.retrieve(name)
    assert (model.id, model.object, model.owned_by) == (name, "model", "acme")
    assert name not in [m.id for m in client.models.list().data]  # served and retrievable, not listed
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(name)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(name.replace("step-2", "step-3"))

