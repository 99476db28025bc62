"""Evals: definitions, runs (eval jobs), output items, and each run's report as JSON and as a page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from tuneforge.errors import NotFound
from tuneforge.jobs import registry as kinds
from tuneforge.jobs.eval import EvalRunSpec
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.evals_protocol import (
    EvalCreate,
    EvalDeleted,
    EvalList,
    EvalObject,
    EvalRun,
    EvalUpdate,
    OutputItem,
    OutputItemList,
    OutputItemResult,
    PerTestingCriteriaResult,
    ResultCounts,
    RunCreate,
    RunDeleted,
    RunEvent,
    RunEventList,
    RunList,
)
from tuneforge.store import evals, jobs
from tuneforge.store.tables import Eval, Job

router = APIRouter(prefix="/v1/evals", tags=["evals"])
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]
STATUS = {"validating_files": "queued", "queued": "queued", "running": "in_progress", "succeeded": "completed",
          "failed": "failed", "cancelled": "canceled"}
MAX_RUNS_LISTED = 10_000  # an eval's runs are found among the project's eval jobs, newest first


def spec_of(job: Job) -> EvalRunSpec:
    return kinds.get("eval").spec(job)


def eval_to_api(ev: Eval) -> EvalObject:
    cfg = dict(ev.data_source_config)
    if cfg.get("type") == "custom" and "schema" not in cfg:  # OpenAI answers with the schema of item + sample
        cfg = {"type": "custom", "schema": {"type": "object", "properties": {
            "item": cfg.get("item_schema") or {"type": "object"}, "sample": {"type": "object"}}, "required": ["item"]}}
    cfg.setdefault("schema", {"type": "object"})
    return EvalObject(id=ev.id, created_at=ev.created_at, data_source_config=cfg, metadata=ev.metadata_,
                      name=ev.name, testing_criteria=ev.testing_criteria)


def run_to_api(job: Job) -> EvalRun:
    spec, result = spec_of(job), job.result or {}
    counts = result.get("counts", {})
    per = [PerTestingCriteriaResult(testing_criteria=k, **v) for k, v in counts.get("per_testing_criteria", {}).items()]
    error = {"code": job.error.get("code") or "error", "message": job.error.get("message", "")} if job.error else None
    return EvalRun(
        id=job.id, created_at=job.created_at, data_source=spec.data_source, error=error, eval_id=spec.eval_id,
        metadata=spec.metadata, model=", ".join(spec.models), name=spec.name, per_testing_criteria_results=per,
        report_url=f"/v1/evals/{spec.eval_id}/runs/{job.id}/report.html",
        result_counts=ResultCounts(**{k: counts.get(k, 0) for k in ("total", "passed", "failed", "errored")}),
        status=STATUS[job.status], models=spec.models,
        summary={k: v for k, v in result.items() if k not in ("counts", "deleted")} or None,
    )


def _page(data: list) -> dict:
    return {"data": data, "first_id": data[0].id if data else None, "last_id": data[-1].id if data else None}


@router.post("", response_model=EvalObject)
def create_eval(state: StateDep, project: ProjectDep, body: EvalCreate):
    with state.db.session() as s:
        return eval_to_api(evals.create(s, project.id, name=body.name, data_source_config=body.data_source_config,
                                        testing_criteria=body.testing_criteria, metadata=body.metadata))


@router.get("", response_model=EvalList)
def list_evals(state: StateDep, project: ProjectDep, after: str | None = None, limit: Limit = 20, order: Order = "asc"):
    with state.db.session() as s:
        rows, more = evals.list_(s, project.id, after=after, limit=limit, order=order)
        return EvalList(**_page([eval_to_api(e) for e in rows]), has_more=more)


@router.get("/{eval_id}", response_model=EvalObject)
def get_eval(state: StateDep, project: ProjectDep, eval_id: str):
    with state.db.session() as s:
        return eval_to_api(evals.get(s, eval_id, project.id))


@router.post("/{eval_id}", response_model=EvalObject)
def update_eval(state: StateDep, project: ProjectDep, eval_id: str, body: EvalUpdate):
    """Rename an eval or replace its metadata (its criteria are fixed: runs were graded by them)."""
    with state.db.session() as s:
        ev = evals.get(s, eval_id, project.id)
        if body.name is not None:
            ev.name = body.name
        if body.metadata is not None:
            ev.metadata_ = body.metadata
        return eval_to_api(ev)


@router.delete("/{eval_id}", response_model=EvalDeleted)
def delete_eval(state: StateDep, project: ProjectDep, eval_id: str):
    """Delete an eval; its unfinished runs are cancelled."""
    with state.db.session() as s:
        evals.get(s, eval_id, project.id)
        for job in runs_of(s, project.id, eval_id):
            if job.status not in jobs.FINAL:
                jobs.cancel(s, job.id, project_id=project.id, kind="eval")
        evals.delete(s, eval_id, project.id)
    return EvalDeleted(eval_id=eval_id)


@router.post("/{eval_id}/runs", response_model=EvalRun)
def create_run(state: StateDep, project: ProjectDep, eval_id: str, body: RunCreate):
    with state.db.session() as s:
        ev = evals.get(s, eval_id, project.id)
        return run_to_api(kinds.get("eval").accept(s, project, body, eval=ev))


def runs_of(s, project_id: str, eval_id: str) -> list[Job]:
    rows, _ = jobs.list_(s, project_id=project_id, after=None, limit=MAX_RUNS_LISTED, kind="eval")
    return [j for j in rows if j.spec.get("eval_id") == eval_id and not (j.result or {}).get("deleted")]


@router.get("/{eval_id}/runs", response_model=RunList)
def list_runs(state: StateDep, project: ProjectDep, eval_id: str, after: str | None = None, limit: Limit = 20,
              order: Order = "asc",
              status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None):
    with state.db.session() as s:
        evals.get(s, eval_id, project.id)
        runs = [run_to_api(j) for j in runs_of(s, project.id, eval_id)]
    runs = [r for r in (runs if order == "desc" else runs[::-1]) if status is None or r.status == status]
    start = next((n + 1 for n, r in enumerate(runs) if r.id == after), 0) if after else 0
    page = runs[start:start + limit]
    return RunList(**_page(page), has_more=start + limit < len(runs))


def run_of(s, project, eval_id: str, run_id: str) -> Job:
    evals.get(s, eval_id, project.id)
    job = jobs.get(s, run_id, project_id=project.id, kind="eval")
    if job.spec.get("eval_id") != eval_id or (job.result or {}).get("deleted"):
        raise kinds.get("eval").not_found(run_id)
    return job


@router.get("/{eval_id}/runs/{run_id}", response_model=EvalRun)
def get_run(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    with state.db.session() as s:
        return run_to_api(run_of(s, project, eval_id, run_id))


@router.post("/{eval_id}/runs/{run_id}/cancel", response_model=EvalRun)
def cancel_run(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """Cancel a run; what it generated and judged so far stays in its folder."""
    with state.db.session() as s:
        run_of(s, project, eval_id, run_id)
        return run_to_api(jobs.cancel(s, run_id, project_id=project.id, kind="eval"))


@router.delete("/{eval_id}/runs/{run_id}", response_model=RunDeleted)
def delete_run(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """Delete a run (cancelled first if unfinished); its job and events stay, for the record."""
    with state.db.session() as s:
        job = run_of(s, project, eval_id, run_id)
        if job.status not in jobs.FINAL:
            job = jobs.cancel(s, run_id, project_id=project.id, kind="eval")
        job.result = {**(job.result or {}), "deleted": True}
    return RunDeleted(run_id=run_id)


@router.get("/{eval_id}/runs/{run_id}/events", response_model=RunEventList)
def run_events(state: StateDep, project: ProjectDep, eval_id: str, run_id: str, after: str | None = None,
               limit: Limit = 20):
    """The run's progress, newest first (a tuneforge extension, as fine-tuning jobs have)."""
    with state.db.session() as s:
        run_of(s, project, eval_id, run_id)
        rows, more = jobs.events(s, run_id, after=after, limit=limit)
        data = [RunEvent(id=e.id, created_at=e.created_at, level=e.level, message=e.message, data=e.data,
                         type=e.type) for e in rows]
    return RunEventList(data=data, has_more=more)


def report_path(state, project, eval_id: str, run_id: str, name: str = "report.json") -> Path:
    with state.db.session() as s:
        job = run_of(s, project, eval_id, run_id)
    path = Path(job.out_dir) / name
    if job.status != "succeeded" or not path.exists():
        raise NotFound(f"Run {run_id} has no report: it is {STATUS[job.status]}", param="run_id",
                       code="report_not_ready")
    return path


@router.get("/{eval_id}/runs/{run_id}/report")
def run_report(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """The whole report: means with CIs, pairwise win rates, ratings, the judge, every row."""
    return FileResponse(report_path(state, project, eval_id, run_id), media_type="application/json")


@router.get("/{eval_id}/runs/{run_id}/report.html")
def run_report_html(state: StateDep, project: ProjectDep, eval_id: str, run_id: str):
    """The report as a self-contained page (no external scripts, styles or fonts)."""
    return FileResponse(report_path(state, project, eval_id, run_id, "report.html"), media_type="text/html")


def _items_of(state, project, eval_id: str, run_id: str) -> list[OutputItem]:
    report = json.loads(report_path(state, project, eval_id, run_id).read_text())
    with state.db.session() as s:
        job = run_of(s, project, eval_id, run_id)
        spec, created = spec_of(job), job.finished_at or job.created_at
    return [item for row in report["rows"] for item in _row_items(report, row, spec, eval_id, run_id, created)]


@router.get("/{eval_id}/runs/{run_id}/output_items", response_model=OutputItemList)
def output_items(state: StateDep, project: ProjectDep, eval_id: str, run_id: str, after: str | None = None,
                 limit: Limit = 20, order: Order = "asc", status: Literal["pass", "fail"] | None = None):
    """One item per row and model, with each pointwise grader's result."""
    items = [i for i in _items_of(state, project, eval_id, run_id) if status is None or i.status == status]
    items = items[::-1] if order == "desc" else items
    start = next((n + 1 for n, i in enumerate(items) if i.id == after), 0) if after else 0
    page = items[start:start + limit]
    return OutputItemList(**_page(page), has_more=start + limit < len(items))


@router.get("/{eval_id}/runs/{run_id}/output_items/{output_item_id}", response_model=OutputItem)
def output_item(state: StateDep, project: ProjectDep, eval_id: str, run_id: str, output_item_id: str):
    for item in _items_of(state, project, eval_id, run_id):
        if item.id == output_item_id:
            return item
    raise NotFound(f"No output item {output_item_id} in run {run_id}", param="output_item_id", code="not_found")


def _row_items(report: dict, row: dict, spec: EvalRunSpec, eval_id: str, run_id: str, created: int):
    """An item is passed when every pointwise grade that applies is 1, failed when one is below, and errored
    when the model gave no answer; one with no pointwise grade (a judge-only eval) is failed unless judged
    a win (the judge's verdicts are in the report, not here)."""
    sampling = spec.sampling
    for m, (model, answer) in enumerate(row["outputs"].items()):
        results = [OutputItemResult(name=label, type=report["graders"].get(label, {}).get("kind"),
                                    score=g[model]["score"], passed=g[model]["score"] >= 1,
                                    sample={"detail": g[model]["detail"]})
                   for label, g in row["grades"].items() if model in g and g[model]["score"] is not None]
        error = answer.get("error")
        status = "error" if error else "pass" if results and all(r.passed for r in results) else "fail"
        message = {"role": "assistant", "content": answer.get("text", "")}
        if answer.get("tool_calls"):
            message["tool_calls"] = answer["tool_calls"]
        yield OutputItem(
            id=f"outputitem_{run_id.removeprefix('evalrun_')[:16]}_{row['index']}_{m}", created_at=created,
            datasource_item={**row["prompt"], "reference": row["reference"], **row["meta"]},
            datasource_item_id=row["index"], eval_id=eval_id, results=results, run_id=run_id, status=status,
            sample={"model": model, "input": row["prompt"]["messages"], "output": [message],
                    "error": {"code": "model_error" if error else "", "message": error or ""},
                    "finish_reason": "error" if error else "stop", "max_completion_tokens":
                    sampling.max_completion_tokens or 0, "seed": sampling.seed or 0,
                    "temperature": sampling.temperature, "top_p": sampling.top_p,
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}},
        )
