"""Overview: the last 30 days' spend by model and day, traffic, running jobs, and the savings headline (what the
teacher's traffic costs, what the student would cost, and the student's win rate against the teacher, with its
interval, from an eval run)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request

from tuneforge.console.auth import User
from tuneforge.console.charts import stacked_bars
from tuneforge.console.render import page
from tuneforge.errors import TuneforgeError
from tuneforge.evals import savings
from tuneforge.server.deps import StateDep
from tuneforge.server.routes.reports import savings_for
from tuneforge.store import jobs, logs
from tuneforge.store.tables import Job

router = APIRouter(include_in_schema=False)
DAYS = 30
TOP_MODELS = 5
# where each job kind's page is (the overview links running jobs to it)
JOB_PAGES = {"fine_tune": "/fine-tunes/{id}", "eval": "/evals/runs/{id}", "relabel": "/datasets",
             "merge": "/models", "bakeoff": "/models"}
SAVINGS_FIELDS = ("teacher", "student", "eval_run", "usd_per_hour", "tokens_per_second")


def _series(rows: list[dict], value: str) -> tuple[list[str], dict[str, list[float]]]:
    """Days (every day in the window) and one list per model (the top ones by spend, then `other`)."""
    today = time.time()
    days = [time.strftime("%Y-%m-%d", time.gmtime(today - (DAYS - 1 - i) * 86400)) for i in range(DAYS)]
    index = {d: i for i, d in enumerate(days)}
    spend: dict[str, float] = defaultdict(float)
    for r in rows:
        spend[r["model"]] += r["cost_usd"] + r["calls"] * 1e-9  # calls break ties between unpriced models
    top = [m for m, _ in sorted(spend.items(), key=lambda kv: -kv[1])[:TOP_MODELS]]
    series: dict[str, list[float]] = {m: [0.0] * DAYS for m in top}
    for r in rows:
        name = r["model"] if r["model"] in series else "other"
        series.setdefault(name, [0.0] * DAYS)
        if r["day"] in index:
            series[name][index[r["day"]]] += r[value]
    return days, series


def _running(s, project_id: str) -> list[dict[str, Any]]:
    rows, _ = jobs.list_(s, project_id=project_id, after=None, limit=50)
    return [{"id": j.id, "kind": j.kind, "status": j.status, "created_at": j.created_at,
             "href": JOB_PAGES.get(j.kind, "/").format(id=j.id)} for j in rows if j.status in jobs.ACTIVE]


def _eval_runs(s, project_id: str) -> list[Job]:
    rows, _ = jobs.list_(s, project_id=project_id, after=None, limit=20, kind="eval")
    return [j for j in rows if j.status == "succeeded"]


def _savings(s, project_id: str, form: dict[str, str], runs: list[Job]) -> tuple[dict | None, dict[str, str]]:
    """The savings table for the form's choices, or why not (by field)."""
    if not form.get("teacher") or not form.get("student"):
        return None, {}
    errors: dict[str, str] = {}
    numbers = {}
    for name in ("usd_per_hour", "tokens_per_second"):
        try:
            numbers[name] = float(form.get(name) or "")
            if numbers[name] <= 0 and name == "tokens_per_second":
                raise ValueError
        except ValueError:
            errors[name] = f"{name}: a positive number"
    if errors:
        return None, errors
    try:
        price = savings.HourlyPrice(**numbers)
        table = savings_for(s, project_id, logs.LogFilter(model=form["teacher"]), student=form["student"],
                            price=price, eval_run=form.get("eval_run") or None)
    except TuneforgeError as exc:
        field = {"model": "teacher", "eval_run": "eval_run", "teacher": "eval_run"}.get(exc.param or "", "student")
        return None, {field: str(exc)}
    except ValueError as exc:  # pydantic's bounds on the price
        return None, {"usd_per_hour": str(exc).splitlines()[0]}
    return table, {}


@router.get("/")
def overview(request: Request, state: StateDep, user: User, teacher: str = "", student: str = "",
             eval_run: str = "", usd_per_hour: str = "1.0", tokens_per_second: str = "170"):
    form = {"teacher": teacher.strip(), "student": student.strip(), "eval_run": eval_run,
            "usd_per_hour": usd_per_hour, "tokens_per_second": tokens_per_second}
    with state.db.session() as s:
        rows = logs.daily(s, user.project.id, time.time() - DAYS * 86400)
        running = _running(s, user.project.id)
        runs = _eval_runs(s, user.project.id)
        models = logs.recent_models(s, user.project.id)
        table, errors = _savings(s, user.project.id, form, runs)
        run_choices = [(j.id, f"{j.id} ({time.strftime('%m-%d %H:%M', time.gmtime(j.created_at))})") for j in runs]
    days, spend = _series(rows, "cost_usd")
    _, calls = _series(rows, "calls")
    totals = {"calls": sum(r["calls"] for r in rows), "cost_usd": sum(r["cost_usd"] for r in rows),
              "errors": sum(r["errors"] for r in rows)}
    return page(request, "overview.html", user, totals=totals, days=DAYS, running=running, models=models,
                spend_chart=stacked_bars(days, spend, label=f"Spend by model and day, last {DAYS} days", unit="$"),
                calls_chart=stacked_bars(days, calls, label=f"Calls by model and day, last {DAYS} days"),
                form=form, errors=errors, table=table, runs=run_choices)
