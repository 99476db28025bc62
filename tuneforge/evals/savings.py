"""The savings table: what the captured traffic costs on the teacher, what it would cost on the student, and
how often the student is as good (its win rate against the teacher, with the CI), side by side.

Pure arithmetic on numbers the caller gathers: traffic totals from the request logs (calls, tokens, cost
priced by `capture/pricing.py`, and the days they cover), the student's price, and the win rate from an eval
report. The student is priced one of two ways:

- `HourlyPrice`: the machine it runs on costs `usd_per_hour`, and it generates `tokens_per_second` (measured on
  this hardware, e.g. by bench/serve_throughput.py); the traffic's completion tokens take
  completion_tokens / tokens_per_second seconds, plus prompt_tokens / prompt_tokens_per_second when a prefill
  rate is given (otherwise prompt processing is taken as free next to generation, which the table says).
- `TokenPrice`: dollars per million input and output tokens (a hosted endpoint for the student).

Per month means 30 days at the observed daily rate.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tuneforge.errors import UserError

DAYS_PER_MONTH = 30


class Traffic(BaseModel):
    """The matching captured traffic: totals over `days` days."""

    calls: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0, description="what these calls cost on the teacher (logs x pricing)")
    days: float = Field(gt=0, description="the span of time the traffic covers, in days")


class HourlyPrice(BaseModel):
    kind: Literal["hourly"] = "hourly"
    tokens_per_second: float = Field(gt=0, description="the student's measured generation speed on this hardware")
    usd_per_hour: float = Field(ge=0, description="what the machine costs per hour")
    prompt_tokens_per_second: float | None = Field(None, gt=0, description="its prefill speed (default: prompt "
                                                                            "processing not counted)")


class TokenPrice(BaseModel):
    kind: Literal["tokens"] = "tokens"
    usd_per_1m_input: float = Field(ge=0)
    usd_per_1m_output: float = Field(ge=0)


def student_cost(traffic: Traffic, price: HourlyPrice | TokenPrice) -> tuple[float, float | None]:
    """(cost in USD of the traffic on the student, machine hours it takes or None for token pricing)."""
    if isinstance(price, TokenPrice):
        return (traffic.prompt_tokens * price.usd_per_1m_input
                + traffic.completion_tokens * price.usd_per_1m_output) / 1e6, None
    seconds = traffic.completion_tokens / price.tokens_per_second
    if price.prompt_tokens_per_second:
        seconds += traffic.prompt_tokens / price.prompt_tokens_per_second
    hours = seconds / 3600
    return hours * price.usd_per_hour, hours


def savings_table(traffic: Traffic, *, student: str, price: HourlyPrice | TokenPrice, teacher: str | None = None,
                  win_rate: dict | None = None) -> dict:
    """The table as a dict (also the JSON the CLI prints with --json)."""
    cost, hours = student_cost(traffic, price)
    teacher_day = traffic.cost_usd / traffic.days
    student_day = cost / traffic.days
    notes = []
    if isinstance(price, HourlyPrice) and not price.prompt_tokens_per_second:
        notes.append("prompt processing time not counted for the student (no prompt_tokens_per_second given)")
    return {
        "teacher": {"model": teacher, **traffic.model_dump(), "cost_per_day": teacher_day,
                    "cost_per_month": teacher_day * DAYS_PER_MONTH},
        "student": {"model": student, "price": price.model_dump(), "cost_usd": cost, "hours": hours,
                    "cost_per_day": student_day, "cost_per_month": student_day * DAYS_PER_MONTH},
        "savings_per_day": teacher_day - student_day,
        "savings_per_month": (teacher_day - student_day) * DAYS_PER_MONTH,
        "savings_pct": (1 - cost / traffic.cost_usd) * 100 if traffic.cost_usd else None,
        "win_rate": win_rate, "notes": notes,
    }


def win_rate_from_report(report: dict, student: str, teacher: str, grader: str | None = None) -> dict:
    """The student's win rate against the teacher from an eval report: the judge's if it ran, else `grader`'s.

    {grader, win_rate, ci_low, ci_high, wins, ties, losses, n}, from the student's side.
    """
    wanted = grader or ((report.get("judge") or {}).get("label"))
    for p in report.get("pairwise", []):
        if {p["a"], p["b"]} != {student, teacher} or (wanted is not None and p["grader"] != wanted):
            continue
        keys = ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "n")
        out = {"grader": p["grader"], **{k: p[k] for k in keys}}
        if p["a"] == teacher:  # seen from the other side
            out |= {"win_rate": _flip(p["win_rate"]), "ci_low": _flip(p["ci_high"]), "ci_high": _flip(p["ci_low"]),
                    "wins": p["losses"], "losses": p["wins"]}
        return out
    raise UserError(f"the eval report has no {wanted or 'pairwise'} comparison of '{student}' with '{teacher}': "
                    "run an eval with both models (and a judge)")


def _flip(value: float | None) -> float | None:
    return None if value is None else 1 - value


def table_rows(table: dict) -> list[tuple[str, str, str]]:
    """(what, teacher, student) lines for printing the table."""
    t, s = table["teacher"], table["student"]
    rows = [("model", str(t["model"] or "teacher"), s["model"]),
            ("cost per day", f"${t['cost_per_day']:,.2f}", f"${s['cost_per_day']:,.2f}"),
            ("cost per month (30 days)", f"${t['cost_per_month']:,.2f}", f"${s['cost_per_month']:,.2f}"),
            ("savings per month", "", f"${table['savings_per_month']:,.2f}"
             + (f" ({table['savings_pct']:.1f}%)" if table["savings_pct"] is not None else ""))]
    w = table.get("win_rate")
    if w and w.get("win_rate") is not None:
        rows.append(("student's win rate vs teacher", "", f"{w['win_rate']:.1%} (95% CI {w['ci_low']:.1%} – "
                                                          f"{w['ci_high']:.1%}, {w['grader']}, n={w['n']})"))
    return rows
