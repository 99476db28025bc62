"""Request logs: the SDK wrapper's reports come in here; listing, one log, JSONL export, cost totals."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from tuneforge.capture.record import example
from tuneforge.server.capture_protocol import CostReport, CostRow, LogList, LogObject, LogReport, LogReportResult
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.store import logs
from tuneforge.store.tables import RequestLog

router = APIRouter(prefix="/v1/logs", tags=["logs"])
Limit = Annotated[int, Query(ge=1, le=1000)]


def log_filter(model: str | None = None, tag: Annotated[list[str] | None, Query()] = None,
               status: str | None = None, since: str | None = None, until: str | None = None,
               q: str | None = None) -> logs.LogFilter:
    """The filter every logs route takes as query parameters (tag: repeatable key=value or key~text)."""
    return logs.LogFilter(model=model, tags=tag or [], status=status, since=since, until=until, search=q)


FilterDep = Annotated[logs.LogFilter, Depends(log_filter)]


def to_api(row: RequestLog, full: bool = False) -> LogObject:
    return LogObject(
        id=row.id, source=row.source, model=row.model, status=row.status, ok=row.ok, error=row.error,
        started_at=row.started_at, latency_ms=row.latency_ms, ttft_ms=row.ttft_ms, stream=row.stream,
        prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens, cost_usd=row.cost_usd,
        tags=row.tags or {}, request=json.loads(row.request) if full else None,
        response=json.loads(row.response) if full and row.response else None,
    )


@router.post("", response_model=LogReportResult)
def report(state: StateDep, project: ProjectDep, body: LogReport):
    """Store captured calls; records whose id is already stored are skipped, so retries are safe."""
    with state.db.session() as s:
        stored = logs.ingest(s, project.id, [r.model_dump() for r in body.logs])
    return LogReportResult(received=len(body.logs), stored=stored)


@router.get("", response_model=LogList)
def list_logs(state: StateDep, project: ProjectDep, flt: FilterDep, after: str | None = None, limit: Limit = 20):
    with state.db.session() as s:
        rows, more = logs.list_(s, project.id, flt, after=after, limit=limit)
        return LogList(data=[to_api(r) for r in rows], has_more=more, total=logs.count(s, project.id, flt))


@router.get("/export", response_class=PlainTextResponse)
def export(state: StateDep, project: ProjectDep, flt: FilterDep):
    """Matching calls (default: the successful ones) as OpenAI fine-tuning JSONL: the request's messages + the
    reply (streamed)."""
    flt.status = flt.status or "ok"
    flt.conditions(project.id)  # a bad filter is a 400 now, not a broken stream later

    def lines():
        with state.db.session() as s:
            for row in logs.matching(s, project.id, flt):
                ex = example(json.loads(row.request), json.loads(row.response) if row.response else None)
                if ex is not None:
                    yield json.dumps(ex, ensure_ascii=False) + "\n"

    return StreamingResponse(lines(), media_type="application/jsonl")


@router.get("/costs", response_model=CostReport)
def costs(state: StateDep, project: ProjectDep, flt: FilterDep, by: str = "model"):
    """Calls, tokens and USD grouped by model, day (UTC) or a tag's value (`by=tag:team`)."""
    with state.db.session() as s:
        rows = logs.costs(s, project.id, flt, by)
    return CostReport(by=by, data=[CostRow(**r) for r in rows], total_cost_usd=sum(r["cost_usd"] for r in rows))


@router.get("/{log_id}", response_model=LogObject)
def get_log(state: StateDep, project: ProjectDep, log_id: str):
    with state.db.session() as s:
        return to_api(logs.get(s, log_id, project.id), full=True)
