"""Fine-tuning jobs: create, list, get, cancel, events, checkpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.jobs import fine_tune
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.protocol import (
    CheckpointList,
    CheckpointObject,
    EventList,
    FineTuningJob,
    FineTuningJobCreate,
    FineTuningJobList,
)
from tuneforge.store import jobs, models
from tuneforge.store.tables import Job

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=100)]
KIND = fine_tune.KIND


def to_api(job: Job) -> FineTuningJob:
    spec, result = KIND.spec(job), job.result or {}
    hyper = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", **spec.hyperparameters,
             **result.get("hyperparameters", {})}  # as the trainer resolved them, once it has planned the run
    return FineTuningJob(
        id=job.id, created_at=job.created_at, error=job.error, finished_at=job.finished_at,
        fine_tuned_model=result.get("fine_tuned_model") if job.status == "succeeded" else None,
        hyperparameters=hyper, model=spec.model, organization_id=job.project_id, seed=spec.seed,
        status=job.status, trained_tokens=result.get("trained_tokens"), training_file=spec.training_file,
        validation_file=spec.validation_file, integrations=spec.integrations, metadata=spec.metadata,
        user_provided_suffix=spec.suffix, method={"type": spec.method, spec.method: {"hyperparameters": hyper}},
    )


@router.post("", response_model=FineTuningJob)
def create_job(state: StateDep, project: ProjectDep, body: FineTuningJobCreate):
    with state.db.session() as s:
        return to_api(KIND.accept(s, project, body))


@router.get("", response_model=FineTuningJobList)
def list_jobs(state: StateDep, project: ProjectDep, after: str | None = None, limit: Limit = 20):
    with state.db.session() as s:
        rows, more = jobs.list_(s, project_id=project.id, after=after, limit=limit, kind=KIND.name)
        return FineTuningJobList(data=[to_api(j) for j in rows], has_more=more)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJob)
def get_job(state: StateDep, project: ProjectDep, fine_tuning_job_id: str):
    with state.db.session() as s:
        return to_api(jobs.get(s, fine_tuning_job_id, project_id=project.id, kind=KIND.name))


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJob)
def cancel_job(state: StateDep, project: ProjectDep, fine_tuning_job_id: str):
    with state.db.session() as s:
        return to_api(jobs.cancel(s, fine_tuning_job_id, project_id=project.id, kind=KIND.name))


@router.get("/{fine_tuning_job_id}/events", response_model=EventList)
def list_events(state: StateDep, project: ProjectDep, fine_tuning_job_id: str, after: str | None = None,
                limit: Limit = 20):
    with state.db.session() as s:
        jobs.get(s, fine_tuning_job_id, project_id=project.id, kind=KIND.name)
        return EventList.page(s, fine_tuning_job_id, after=after, limit=limit)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(state: StateDep, project: ProjectDep, fine_tuning_job_id: str, after: str | None = None,
                     limit: Limit = 10):
    with state.db.session() as s:
        jobs.get(s, fine_tuning_job_id, project_id=project.id, kind=KIND.name)
        rows, more = models.checkpoints(s, fine_tuning_job_id, after=after, limit=limit)
        data = [CheckpointObject(id=c.id, created_at=c.created_at, fine_tuned_model_checkpoint=c.model_name,
                                 fine_tuning_job_id=c.job_id, metrics=c.metrics, step_number=c.step) for c in rows]
    return CheckpointList(data=data, has_more=more, first_id=data[0].id if data else None,
                          last_id=data[-1].id if data else None)
