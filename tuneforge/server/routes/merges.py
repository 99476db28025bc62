"""Merges: create (a mergekit config, or adapters to combine), list, get, cancel, events. The merged model is
`merge:NAME`, listed by /v1/models and deleted there."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.jobs import merge
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.merges_protocol import MergeCreate, MergeJob, MergeList
from tuneforge.server.protocol import EventList
from tuneforge.store import jobs
from tuneforge.store.tables import Job

router = APIRouter(prefix="/v1/merges", tags=["merges"])
Limit = Annotated[int, Query(ge=1, le=100)]
KIND = merge.KIND


def to_api(job: Job) -> MergeJob:
    spec, result = KIND.spec(job), job.result or {}
    return MergeJob(
        id=job.id, created_at=job.created_at, finished_at=job.finished_at, status=job.status, model=spec.model,
        type=spec.type, config=spec.config, adapters=spec.adapters, weights=spec.weights, method=spec.method,
        seed=spec.seed, error=job.error, result={"inputs": result["inputs"]} if "inputs" in result else None,
        metadata=spec.metadata,
    )


@router.post("", response_model=MergeJob)
def create_merge(state: StateDep, project: ProjectDep, body: MergeCreate):
    with state.db.session() as s:
        return to_api(KIND.accept(s, project, body))


@router.get("", response_model=MergeList)
def list_merges(state: StateDep, project: ProjectDep, after: str | None = None, limit: Limit = 20):
    with state.db.session() as s:
        rows, more = jobs.list_(s, project_id=project.id, after=after, limit=limit, kind=KIND.name)
        return MergeList(data=[to_api(j) for j in rows], has_more=more)


@router.get("/{merge_id}", response_model=MergeJob)
def get_merge(state: StateDep, project: ProjectDep, merge_id: str):
    with state.db.session() as s:
        return to_api(jobs.get(s, merge_id, project_id=project.id, kind=KIND.name))


@router.post("/{merge_id}/cancel", response_model=MergeJob)
def cancel_merge(state: StateDep, project: ProjectDep, merge_id: str):
    with state.db.session() as s:
        return to_api(jobs.cancel(s, merge_id, project_id=project.id, kind=KIND.name))


@router.get("/{merge_id}/events", response_model=EventList)
def list_events(state: StateDep, project: ProjectDep, merge_id: str, after: str | None = None, limit: Limit = 20):
    with state.db.session() as s:
        jobs.get(s, merge_id, project_id=project.id, kind=KIND.name)
        return EventList.page(s, merge_id, after=after, limit=limit)
