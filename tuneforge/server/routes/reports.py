"""Reports: the savings table (captured teacher traffic's cost vs the student's, with the student's win rate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from tuneforge.errors import UserError
from tuneforge.evals import savings
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.routes.logs import FilterDep
from tuneforge.store import jobs, logs

router = APIRouter(prefix="/v1/reports", tags=["reports"])
DAY_S = 86_400.0
Positive = Annotated[float | None, Query(gt=0)]


@router.get("/savings")
def savings_report(
    state: StateDep, project: ProjectDep, flt: FilterDep, student: str,
    eval_run: Annotated[str | None, Query(description="An eval run that compared the student with the teacher.")]
    = None,
    teacher: Annotated[str | None, Query(description="The teacher's name in that run (default: `answers`, the "
                                                     "captured replies, when the run has them, else `model`).")]
    = None,
    usd_per_hour: Annotated[float | None, Query(ge=0)] = None, tokens_per_second: Positive = None,
    prompt_tokens_per_second: Positive = None, usd_per_1m_input: Annotated[float | None, Query(ge=0)] = None,
    usd_per_1m_output: Annotated[float | None, Query(ge=0)] = None,
    days: Positive = None,
) -> dict[str, Any]:
    """What the matching captured calls cost on the teacher per day and month, what they would cost on the
    student, and the student's win rate against the teacher with its CI."""
    price = _price(usd_per_hour, tokens_per_second, prompt_tokens_per_second, usd_per_1m_input, usd_per_1m_output)
    with state.db.session() as s:
        return savings_for(s, project.id, flt, student=student, price=price, eval_run=eval_run, teacher=teacher,
                           days=days)


def savings_for(s, project_id: str, flt: logs.LogFilter, *, student: str, price, eval_run: str | None = None,
                teacher: str | None = None, days: float | None = None) -> dict[str, Any]:
    """The savings table of the captured calls matching `flt` (successful ones unless it says otherwise), with the
    student's win rate from `eval_run` when one is named (the API's report and the console's overview)."""
    flt.status = flt.status or "ok"
    t = logs.totals(s, project_id, flt)
    report = _eval_report(s, project_id, eval_run) if eval_run else None
    if t["calls"] == 0:
        raise UserError("no captured calls match the filter: capture some first, or widen --model / --tag",
                        param="model")
    span = days or max((t["last"] - t["first"]) / DAY_S, 1.0)
    traffic = savings.Traffic(calls=t["calls"], prompt_tokens=t["prompt_tokens"],
                              completion_tokens=t["completion_tokens"], cost_usd=t["cost_usd"], days=span)
    win = None
    if report is not None:
        names = {m["name"] for m in report["models"]}
        teacher = teacher or ("answers" if "answers" in names else flt.model)
        if not teacher:
            raise UserError("name the teacher in the eval run (`teacher`): the run has no `answers` and no `model` "
                            "filter was given", param="teacher")
        win = savings.win_rate_from_report(report, student, teacher)
    table = savings.savings_table(traffic, student=student, price=price, teacher=flt.model, win_rate=win)
    return table | {"unpriced_calls": t["unpriced_calls"], "eval_run": eval_run,
                    "filter": {"model": flt.model, "tags": flt.tags, "since": flt.since, "until": flt.until}}


def _price(usd_per_hour, tokens_per_second, prompt_tps, usd_in, usd_out):
    if usd_in is not None or usd_out is not None:
        return savings.TokenPrice(usd_per_1m_input=usd_in or 0.0, usd_per_1m_output=usd_out or 0.0)
    if usd_per_hour is None or tokens_per_second is None:
        raise UserError("price the student: usd_per_hour with tokens_per_second (its measured speed), or "
                        "usd_per_1m_input / usd_per_1m_output", param="usd_per_hour")
    return savings.HourlyPrice(usd_per_hour=usd_per_hour, tokens_per_second=tokens_per_second,
                               prompt_tokens_per_second=prompt_tps)


def _eval_report(s, project_id: str, run_id: str) -> dict:
    job = jobs.get(s, run_id, project_id=project_id, kind="eval")
    path = Path(job.out_dir) / "report.json"
    if job.status != "succeeded" or not path.exists():
        state = job.status if job.status in ("failed", "cancelled") else f"is {job.status}"
        raise UserError(f"eval run {run_id} has no report: it {state}", param="eval_run")
    return json.loads(path.read_text())
