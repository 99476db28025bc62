"""`tuneforge report savings`: the teacher's cost for the captured traffic next to the student's, and the
student's win rate against the teacher, from the platform's API.

With `--usd-per-hour` and no `--tokens-per-second`, the student's speed is measured first: a few of the
matching captured prompts are sent to it at once through the platform's chat completions (the path its
traffic would take), and its generated tokens per second are what the hour is divided by.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.app import app, console, out
from tuneforge.cli.logs_cmd import Model, Since, Tag, Until
from tuneforge.cli.platform import DEFAULT_URL, ApiKey, BaseUrl, Platform

report_app = typer.Typer(help="Reports over the platform's logs and evals.", no_args_is_help=True)
app.add_typer(report_app, name="report")
Opt = typer.Option
MEASURE_REQUESTS = 8
MEASURE_MAX_TOKENS = 64


@report_app.command("savings")
def savings(
    student: Annotated[str, Opt(help="The student model (e.g. an ft: model).")],
    model: Model = None, tag: Tag = None, since: Since = None, until: Until = None,
    eval_run: Annotated[str | None, Opt("--eval", help="An eval run that compared the student with the teacher.")]
    = None,
    teacher: Annotated[str | None, Opt(help="The teacher's name in that run (default: `answers`, the captured "
                                            "replies, when the run has them, else --model).")] = None,
    usd_per_hour: Annotated[float | None, Opt(help="What the student's machine costs per hour.")] = None,
    tokens_per_second: Annotated[float | None, Opt(help="The student's speed (default: measured now).")] = None,
    usd_per_1m_input: Annotated[float | None, Opt(help="Or: the student's price per 1M input tokens.")] = None,
    usd_per_1m_output: Annotated[float | None, Opt(help="And per 1M output tokens.")] = None,
    days: Annotated[float | None, Opt(help="Days the traffic covers (default: its span, at least 1).")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print the JSON instead of a table.")] = False,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None,
) -> None:
    """Teacher cost vs student cost per day and month for the matching traffic, with the student's win rate."""
    platform = Platform(base_url, api_key)
    flt = {"model": model, "tag": tag or [], "since": since, "until": until}
    per_token = usd_per_1m_input is not None or usd_per_1m_output is not None
    if usd_per_hour is not None and tokens_per_second is None and not per_token:
        tokens_per_second = measure(platform, student, flt)
        console.print(f"[dim]{student} generates {tokens_per_second:.1f} tokens/s here[/dim]")
    params = {k: v for k, v in {**flt, "student": student, "eval_run": eval_run, "teacher": teacher,
                                "usd_per_hour": usd_per_hour, "tokens_per_second": tokens_per_second,
                                "usd_per_1m_input": usd_per_1m_input, "usd_per_1m_output": usd_per_1m_output,
                                "days": days}.items() if v is not None and v != []}
    table = platform.json("GET", "/v1/reports/savings", params=params)
    if as_json:
        out.print_json(json.dumps(table))
        return
    from tuneforge.evals.savings import table_rows

    view = Table("", "teacher", "student", title=f"savings: {student}")
    for row in table_rows(table):
        view.add_row(*row)
    out.print(view)


def measure(platform: Platform, student: str, flt: dict) -> float:
    """Generated tokens per second with MEASURE_REQUESTS of the captured prompts in flight at once."""
    params = {k: v for k, v in flt.items() if v}
    lines: list[str] = []
    with platform.http.stream("GET", "/v1/logs/export", params=params) as r:  # the first few calls are enough
        for line in r.iter_lines():
            if r.status_code >= 400 or len(lines) == MEASURE_REQUESTS:
                break
            if line.strip():
                lines.append(line)
    prompts = [json.loads(line)["messages"][:-1] for line in lines] or [[{"role": "user", "content": "Hello"}]]
    prompts = (prompts * MEASURE_REQUESTS)[:MEASURE_REQUESTS]

    def one(messages: list[dict]) -> int:
        r = platform.json("POST", "/v1/chat/completions", json={
            "model": student, "messages": messages, "max_tokens": MEASURE_MAX_TOKENS, "temperature": 0})
        return r["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(MEASURE_REQUESTS) as pool:
        tokens = sum(pool.map(one, prompts))
    return max(tokens, 1) / (time.perf_counter() - t0)
