"""Merges: create (a mergekit config, or adapters to combine), list, get, cancel, events. The merged model is
`merge:NAME`, listed by /v1/models and deleted there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from tuneforge.errors import NotFound
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
        seed=spec.seed, error=job.error, metadata=spec.metadata,
        search=spec.search.model_dump() if spec.search else None,
        result={k: result[k] for k in ("inputs", "search") if k in result} or None,
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


@router.get("/{merge_id}/search")
def get_search(state: StateDep, project: ProjectDep, merge_id: str):
    """A merge search's trials, best and curve (JSON)."""
    return FileResponse(_search_file(state, project, merge_id, "search.json"), media_type="application/json")


@router.get("/{merge_id}/search.html")
def get_search_html(state: StateDep, project: ProjectDep, merge_id: str):
    """The same as a page: the curve (score by trial, best so far) and every trial's values and scores."""
    return FileResponse(_search_file(state, project, merge_id, "search.html"), media_type="text/html")


def _search_file(state, project, merge_id: str, name: str) -> Path:
    with state.db.session() as s:
        job = jobs.get(s, merge_id, project_id=project.id, kind=KIND.name)
    path = Path(job.out_dir) / name
    if not path.exists():
        raise NotFound(f"merge {merge_id} has no search report: only a merge with `search` has one, once it has "
                       "succeeded", param="merge_id")
    return path
