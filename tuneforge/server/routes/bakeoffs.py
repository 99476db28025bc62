"""Bake-offs: create, list, get (with their child jobs), cancel (children too), events, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from tuneforge.errors import Conflict
from tuneforge.jobs import bakeoff
from tuneforge.server.bakeoffs_protocol import Bakeoff, BakeoffChild, BakeoffCreate, BakeoffList
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.protocol import EventList
from tuneforge.store import jobs
from tuneforge.store.tables import Job

router = APIRouter(prefix="/v1/bakeoffs", tags=["bake-offs"])
Limit = Annotated[int, Query(ge=1, le=100)]
KIND = bakeoff.KIND


def to_api(s, job: Job) -> Bakeoff:
    spec, result = KIND.spec(job), job.result or {}
    done = job.status == "succeeded"
    return Bakeoff(
        id=job.id, created_at=job.created_at, finished_at=job.finished_at, status=job.status, bases=spec.bases,
        datasets=spec.datasets, judge=spec.judge, reference=spec.reference, merge_top=spec.merge_top,
        budget_tokens=spec.budget_tokens, error=job.error,
        children=[BakeoffChild(id=c.id, kind=c.kind, status=c.status) for c in _children(s, job)],
        ranking=result.get("ranking") if done else None, merge=result.get("merge") if done else None,
        report_url=f"/v1/bakeoffs/{job.id}/report.html" if done else None,
    )


def _children(s, job: Job) -> list[Job]:
    """The children it made, and those it reused from earlier jobs (recorded in its result)."""
    made = jobs.children(s, job.id)
    ids = {c.id for c in made}
    reused = [s.get(Job, i) for i in (job.result or {}).get("children", {}).values() if i not in ids]
    return made + [r for r in reused if r is not None]


@router.post("", response_model=Bakeoff)
def create_bakeoff(state: StateDep, project: ProjectDep, body: BakeoffCreate):
    with state.db.session() as s:
        return to_api(s, KIND.accept(s, project, body))


@router.get("", response_model=BakeoffList)
def list_bakeoffs(state: StateDep, project: ProjectDep, after: str | None = None, limit: Limit = 20):
    with state.db.session() as s:
        rows, more = jobs.list_(s, project_id=project.id, after=after, limit=limit, kind=KIND.name)
        return BakeoffList(data=[to_api(s, j) for j in rows], has_more=more)


@router.get("/{bakeoff_id}", response_model=Bakeoff)
def get_bakeoff(state: StateDep, project: ProjectDep, bakeoff_id: str):
    with state.db.session() as s:
        return to_api(s, jobs.get(s, bakeoff_id, project_id=project.id, kind=KIND.name))


@router.post("/{bakeoff_id}/cancel", response_model=Bakeoff)
def cancel_bakeoff(state: StateDep, project: ProjectDep, bakeoff_id: str):
    with state.db.session() as s:
        return to_api(s, jobs.cancel(s, bakeoff_id, project_id=project.id, kind=KIND.name))


@router.get("/{bakeoff_id}/events", response_model=EventList)
def list_events(state: StateDep, project: ProjectDep, bakeoff_id: str, after: str | None = None,
                limit: Limit = 20):
    with state.db.session() as s:
        jobs.get(s, bakeoff_id, project_id=project.id, kind=KIND.name)
        return EventList.page(s, bakeoff_id, after=after, limit=limit)


@router.get("/{bakeoff_id}/report")
def get_report(state: StateDep, project: ProjectDep, bakeoff_id: str):
    return FileResponse(_report(state, project, bakeoff_id, "report.json"), media_type="application/json")


@router.get("/{bakeoff_id}/report.html")
def get_report_html(state: StateDep, project: ProjectDep, bakeoff_id: str):
    return FileResponse(_report(state, project, bakeoff_id, "report.html"), media_type="text/html")


def _report(state, project, bakeoff_id: str, name: str) -> Path:
    with state.db.session() as s:
        job = jobs.get(s, bakeoff_id, project_id=project.id, kind=KIND.name)
    path = Path(job.out_dir) / name
    if job.status != "succeeded" or not path.exists():
        raise Conflict(f"bake-off {bakeoff_id} is {job.status}: its report exists once it has succeeded",
                       code="invalid_state")
    return path
