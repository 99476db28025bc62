"""`tuneforge logs list|show|export|costs`: the captured calls of a project, through the platform's API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.app import app, console, out
from tuneforge.cli.platform import DEFAULT_URL, ApiKey, BaseUrl, Platform

logs_app = typer.Typer(help="Captured calls (SDK wrapper and proxy): list, show, export, costs.",
                       no_args_is_help=True)
app.add_typer(logs_app, name="logs")

Model = Annotated[str | None, typer.Option(help="Only calls to this model.")]
Tag = Annotated[list[str] | None, typer.Option("--tag", help="key=value (exact) or key~text (contains); repeatable.")]
Status = Annotated[str | None, typer.Option(help="ok, error, or an HTTP status code.")]
Since = Annotated[str | None, typer.Option(help="From: ISO time, Unix seconds, or an age like 24h or 7d.")]
Until = Annotated[str | None, typer.Option(help="Until: ISO time, Unix seconds, or an age.")]
Search = Annotated[str | None, typer.Option("--search", "-q", help="Text in the request or the response.")]


def _params(model, tag, status, since, until, search) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in (("model", model), ("status", status), ("since", since), ("until", until),
                                  ("q", search)) if v]
    return params + [("tag", t) for t in tag or []]


@logs_app.command("list")
def list_logs(model: Model = None, tag: Tag = None, status: Status = None, since: Since = None, until: Until = None,
              search: Search = None, limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
              as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
              base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """The newest matching calls."""
    page = Platform(base_url, api_key).json("GET", "/v1/logs", params=[*_params(model, tag, status, since, until,
                                                                                 search), ("limit", str(limit))])
    if as_json:
        for row in page["data"]:
            out.print_json(json.dumps(row))
        return
    table = Table("id", "time (UTC)", "model", "status", "ms", "tokens in/out", "USD", "tags",
                  title=f"{len(page['data'])} of {page['total']} matching calls")
    for r in page["data"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started_at"]))
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.6f}"
        status_ = str(r["status"] or "-") if r["ok"] else f"[red]{r['status'] or 'no reply'}[/red]"
        tags = " ".join(f"{k}={v}" for k, v in r["tags"].items())
        table.add_row(r["id"], when, r["model"], status_, f"{r['latency_ms']:.0f}",
                      f"{r['prompt_tokens']}/{r['completion_tokens']}", cost, tags)
    out.print(table)


@logs_app.command("show")
def show(log_id: str, base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """One call in full: request, response, error, timings, usage, cost, tags."""
    out.print_json(json.dumps(Platform(base_url, api_key).json("GET", f"/v1/logs/{log_id}")))


@logs_app.command("export")
def export(out_file: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
           model: Model = None, tag: Tag = None, status: Status = "ok", since: Since = None, until: Until = None,
           search: Search = None, base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Matching calls as OpenAI fine-tuning JSONL (the request's messages + the reply)."""
    n = Platform(base_url, api_key).download("/v1/logs/export", out_file,
                                             params=_params(model, tag, status, since, until, search))
    console.print(f"wrote {n} examples to {out_file}")


@logs_app.command("costs")
def costs(by: Annotated[str, typer.Option(help="model, day, or tag:KEY.")] = "model", model: Model = None,
          tag: Tag = None, status: Status = None, since: Since = None, until: Until = None, search: Search = None,
          base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Calls, tokens and USD (from the pricing table) per model, day or tag value."""
    report = Platform(base_url, api_key).json(
        "GET", "/v1/logs/costs", params=[("by", by), *_params(model, tag, status, since, until, search)])
    table = Table(by, "calls", "tokens in", "tokens out", "USD", "unpriced calls",
                  title=f"total ${report['total_cost_usd']:.4f}")
    for r in report["data"]:
        table.add_row(r["key"], str(r["calls"]), f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}",
                      f"{r['cost_usd']:.6f}", str(r["unpriced_calls"]))
    out.print(table)
