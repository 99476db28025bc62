"""Evals: definitions, runs (eval jobs), output items, and each run's report as JSON and as a page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from tuneforge.errors import NotFound
from tuneforge.jobs import registry as kinds
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.evals_protocol import (
    EvalCreate,
    EvalDeleted,
    EvalList,
    EvalObject,
    EvalRun,
    OutputItem,
    OutputItemList,
    OutputItemResult,
    PerTestingCriteriaResult,
    ResultCounts,
    RunCreate,
    RunList,
)
from tuneforge.server.protocol import EventList, FineTuningJobEvent
from tuneforge.store import evals, jobs
from tuneforge.store.tables import Eval, Job

router = APIRouter(prefix="/v1/evals", tags=["evals"])
Limit = Annotated[int, Query(ge=1, le=100)]
STATUS = {"validating_files": "queued", "queued": "queued", "running": "in_progress", "succeeded": "completed",
          "failed": "failed", "cancelled": "canceled"}


def eval_to_api(ev: Eval) -> EvalObject:
    return EvalObject(id=ev.id, created_at=ev.created_at, data_source_config=ev.data_source_config,
                      metadata=ev.metadata_, name=ev.name, testing_criteria=ev.testing_criteria)


def run_to_api(job: Job) -> EvalRun:
    spec, result = job.spec, job.result or {}
    counts = result.get("counts", {})
    per = [PerTestingCriteriaResult(testing_criteria=k, **v) for k, v in counts.get("per_testing_criteria", {}).items()]
    return EvalRun(
        id=job.id, created_at=job.created_at, data_source=spec["data_source"], error=job.error and {
            "code": job.error.get("code") or "error", "message": job.error.get("message", "")},
        eval_id=spec["eval_id"], metadata=spec.get("metadata"), model=", ".join(spec["models"]), name=spec["name"],
        per_testing_criteria_results=per or None, report_url=f"/v1/evals/{spec['eval_id']}/runs/{job.id}/report.html",
        result_counts=ResultCounts(**{k: counts.get(k, 0) for k in ("total", "passed", "failed", "errored")}),
        status=STATUS[job.status], models=spec["models"],
        summary={k: v for k, v in result.items() if k != "counts"} or None,
    )


@router.post("", response_model=EvalObject)
def create_eval(state: StateDep, project: ProjectDep, body: EvalCreate):
    with state.db.session() as s:
        return eval_to_api(evals.create(s, project.id, name=body.name, data_source_config=body.data_source_config,
                                        testing_criteria=body.testing_criteria, metadata=body.metadata))


@router.get("", response_model=EvalList)
def list_evals(state: StateDep, project: ProjectDep, after: str | None = None, limit: Limit = 20,
               order: Literal["asc", "desc"] = "asc"):
    with state.db.session() as s:
        rows, more = evals.list_(s, project.id, after=after, limit=limit, order=order)
        data = [eval_to_api(e) for e in rows]
    return EvalList(data=data, has_more=more, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None)


@router.get("/{eval_id}", response_model=EvalObject)
def get_eval(state: StateDep, project: ProjectDep, eval_id: str):
    with state.db.session() as s:
        return eval_to_api(evals.get(s, eval_id, project.id))


@router.delete("/{eval_id}", response_model=EvalDeleted)
def delete_eval(state: StateDep, project: ProjectDep, eval_id: str):
    with state.db.session() as s:
        evals.delete(s, eval_id, project.id)
    return EvalDeleted(eval_id=eval_id)


@router.post("/{eval_id}/runs", response_model=EvalRun)
def create_run(state: StateDep, project: ProjectDep, eval_id: str, body: RunCreate):
    with state.db.session() as s:
        ev = evals.get(s, eval_id, project.id)
        return run_to_api(kinds.get("eval").accept(s, project, body, eval=ev))


@router.get("/{eval_id}/runs", response_model=RunList)
def list_runs(state: StateDep, project: ProjectDep, eval_id: str, after: str | None = None, limit: Limit = 20):
    with state.db.session() as s:
        evals.get(s, eval_id, project.id)
        rows, _ = jobs.list_(s, project_id=project.id, after=after, limit=10_000, kind="eval")
        mine = [j for j in rows if j.spec.get("eval_id") == eval_id]
        data = [run_to_api(j) for j in mine[:limit]]
    return RunList(data=data, has_more=len(mine) > limit, first_id=data[0].id if data else None,
                   last_id=data[-1].id if data else None)


def _run(s, project, eval_id: str, run_id: str) -> Job:
    job = jobs.get(s, run_id, project_id=project.id, kind="eval")
    if job.spec.get("eval_id") != eval_id:
        raise kinds.get("eval").not_found(run_id)
    return job


@router.get("/{eval_id}/runs/{run_id}", response_model=EvalRun)
def get_run(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    with state.db.session() as s:
        return run_to_api(_run(s, project, eval_id, run_id))


@router.post("/{eval_id}/runs/{run_id}", response_model=EvalRun)
@router.post("/{eval_id}/runs/{run_id}/cancel", response_model=EvalRun, include_in_schema=False)
def cancel_run(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """Cancel a run (OpenAI's SDK posts to the run itself); what it generated and judged stays cached."""
    with state.db.session() as s:
        _run(s, project, eval_id, run_id)
        return run_to_api(jobs.cancel(s, run_id, project_id=project.id, kind="eval"))


@router.get("/{eval_id}/runs/{run_id}/events", response_model=EventList)
def run_events(state: StateDep, project: ProjectDep, eval_id: str, run_id: str, after: str | None = None,
               limit: Limit = 20):
    with state.db.session() as s:
        _run(s, project, eval_id, run_id)
        rows, more = jobs.events(s, run_id, after=after, limit=limit)
        data = [FineTuningJobEvent(id=e.id, created_at=e.created_at, level=e.level, message=e.message, data=e.data,
                                   type=e.type) for e in rows]
    return EventList(data=data, has_more=more)


def _report_path(state, project, eval_id: str, run_id: str, name: str) -> Path:
    with state.db.session() as s:
        job = _run(s, project, eval_id, run_id)
    path = Path(job.out_dir) / name
    if job.status != "succeeded" or not path.exists():
        raise NotFound(f"Run {run_id} has no report yet (it is {STATUS[job.status]})", param="run_id",
                       code="report_not_ready")
    return path


@router.get("/{eval_id}/runs/{run_id}/report")
def run_report(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """The whole report: means with CIs, pairwise win rates, ratings, the judge, every row."""
    return FileResponse(_report_path(state, project, eval_id, run_id, "report.json"), media_type="application/json")


@router.get("/{eval_id}/runs/{run_id}/report.html")
def run_report_html(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """The report as a self-contained page (no external scripts, styles or fonts)."""
    return FileResponse(_report_path(state, project, eval_id, run_id, "report.html"), media_type="text/html")


@router.get("/{eval_id}/runs/{run_id}/output_items", response_model=OutputItemList)
def output_items(state: StateDep, project: ProjectDep, eval_id: str, run_id: str, after: str | None = None,
                 limit: Limit = 20, status: Literal["pass", "fail"] | None = None):
    """One item per row and model, with each pointwise grader's result."""
    report = json.loads(_report_path(state, project, eval_id, run_id, "report.json").read_text())
    with state.db.session() as s:
        created = _run(s, project, eval_id, run_id).finished_at or 0
    items = [i for i in _items(report, eval_id, run_id, created) if status is None or i.status == status]
    start = next((n + 1 for n, i in enumerate(items) if i.id == after), 0) if after else 0
    page = items[start:start + limit]
    return OutputItemList(data=page, has_more=start + limit < len(items), first_id=page[0].id if page else None,
                          last_id=page[-1].id if page else None)


def _items(report: dict, eval_id: str, run_id: str, created: int) -> list[OutputItem]:
    out = []
    for row in report["rows"]:
        for m, (model, answer) in enumerate(row["outputs"].items()):
            results = [OutputItemResult(name=label, type=report["graders"].get(label, {}).get("kind"),
                                        score=g[model]["score"], passed=g[model]["score"] >= 1,
                                        sample={"detail": g[model]["detail"]})
                       for label, g in row["grades"].items() if model in g and g[model]["score"] is not None]
            status = "error" if answer.get("error") else "pass" if all(r.passed for r in results) else "fail"
            out.append(OutputItem(
                id=f"outputitem_{run_id.removeprefix('evalrun_')[:16]}_{row['index']}_{m}", created_at=created,
                datasource_item={**row["prompt"], "reference": row["reference"], **row["meta"]},
                datasource_item_id=row["index"], eval_id=eval_id, results=results,
                run_id=run_id, status=status, sample={"model": model, "output": [
                    {"role": "assistant", "content": answer.get("text", "")}], "error": answer.get("error")},
            ))
    return out
