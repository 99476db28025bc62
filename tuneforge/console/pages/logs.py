"""Request logs: a filterable table of captured calls, paged by keyset (never OFFSET, never a COUNT over every
log: the page costs the same with 1k logs or 1M), one call's detail, and a dataset built from the rows picked."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

from tuneforge.console.auth import Acting, User
from tuneforge.console.render import page
from tuneforge.errors import TuneforgeError
from tuneforge.server.deps import StateDep
from tuneforge.store import datasets, logs

router = APIRouter(include_in_schema=False)
PAGE_SIZES = (25, 50, 100)
FILTER_FIELDS = ("model", "tag", "status", "since", "until", "q")


def _filters(model: str | None, tag: list[str] | None, status: str | None, since: str | None, until: str | None,
             q: str | None) -> dict[str, Any]:
    """The filter as the form shows it (blank fields dropped)."""
    raw = {"model": model, "tag": [t for t in tag or [] if t.strip()], "status": status, "since": since,
           "until": until, "q": q}
    return {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if v}


def _log_filter(f: dict[str, Any], ids: list[str] | None = None) -> logs.LogFilter:
    return logs.LogFilter(model=f.get("model"), tags=f.get("tag", []), status=f.get("status"),
                          since=f.get("since"), until=f.get("until"), search=f.get("q"), ids=ids or [])


def _query(f: dict[str, Any], **extra) -> str:
    pairs = [(k, v) for k, vs in f.items() for v in (vs if isinstance(vs, list) else [vs])]
    return urlencode(pairs + [(k, v) for k, v in extra.items() if v])


def preview(request_json: str, limit: int = 160) -> str:
    """The last user message of a captured chat request (or a prompt), shortened for a table cell."""
    try:
        body = json.loads(request_json)
    except ValueError:
        return ""
    text = ""
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            text = content if isinstance(content, str) else " ".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict))
            break
    else:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _render(request: Request, state, user, f: dict[str, Any], *, after: str | None = None,
            before: str | None = None, limit: int = 50, errors: dict | None = None, form: dict | None = None,
            status_code: int = 200):
    error = None
    rows, more, models = [], False, []
    picked = (form or {}).get("picked") or []
    if picked:  # a form sent back: show the rows that were picked, still picked
        limit = logs.MAX_IDS
    with state.db.session() as s:
        try:
            rows, more = logs.list_(s, user.project.id, _log_filter(f, picked[: logs.MAX_IDS]), after=after,
                                    before=before, limit=limit)
        except TuneforgeError as exc:  # a bad filter value: shown next to its field, the table empty
            error = exc
        models = logs.recent_models(s, user.project.id)
        shown = [{"id": r.id, "started_at": r.started_at, "model": r.model, "status": r.status, "ok": r.ok,
                  "latency_ms": r.latency_ms, "prompt_tokens": r.prompt_tokens,
                  "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd, "tags": r.tags or {},
                  "source": r.source, "preview": preview(r.request)} for r in rows]
    errors = dict(errors or {})
    if error is not None:
        field = {"search": "q", "tags": "tag"}.get(error.param or "", error.param or "q")
        errors[field if field in FILTER_FIELDS else "q"] = str(error)
        status_code = 400
    size = limit if limit != 50 else None
    has_older, has_newer = (True, more) if before else (more, bool(after))
    older = _query(f, after=shown[-1]["id"], limit=size) if shown and has_older else None
    newer = _query(f, before=shown[0]["id"], limit=size) if shown and has_newer else None
    return page(request, "logs.html", user, status_code=status_code, rows=shown, filters=f, models=models,
                newer=newer, older=older, newest=_query(f, limit=size), limit=limit,
                page_sizes=PAGE_SIZES, errors=errors, form=form or {}, query=_query(f))


@router.get("/logs")
def logs_page(request: Request, state: StateDep, user: User, model: str | None = None,
              tag: Annotated[list[str] | None, Query()] = None, status: str | None = None, since: str | None = None,
              until: str | None = None, q: str | None = None, after: str | None = None, before: str | None = None,
              limit: int = 50):
    limit = limit if limit in PAGE_SIZES else 50
    return _render(request, state, user, _filters(model, tag, status, since, until, q), after=after, before=before,
                   limit=limit)


@router.get("/logs/{log_id}")
def log_detail(request: Request, state: StateDep, user: User, log_id: str):
    with state.db.session() as s:
        row = logs.get(s, log_id, user.project.id)
        log = {"id": row.id, "source": row.source, "model": row.model, "status": row.status, "ok": row.ok,
               "error": row.error, "started_at": row.started_at, "latency_ms": row.latency_ms,
               "ttft_ms": row.ttft_ms, "stream": row.stream, "prompt_tokens": row.prompt_tokens,
               "completion_tokens": row.completion_tokens, "cost_usd": row.cost_usd, "tags": row.tags or {},
               "request": row.request, "response": row.response}
    return page(request, "log_detail.html", user, log=log)


@router.post("/logs/dataset")
async def dataset_from_logs(request: Request, state: StateDep, user: Acting,
                            name: Annotated[str, Form()] = "", scope: Annotated[str, Form()] = "selected",
                            test_fraction: Annotated[str, Form()] = "0.2", dedupe: Annotated[str, Form()] = "near"):
    """A dataset from the rows picked on the page (or every call matching the filter), made as the API makes
    one from a log filter; on a problem, the page again with the message by its field and the picks kept."""
    form = await request.form()
    picked = [v for v in form.getlist("log_id") if isinstance(v, str)][: logs.MAX_IDS + 1]
    f = _filters(*(form.get(k) for k in ("model",)), [v for v in form.getlist("tag") if isinstance(v, str)],
                 *(form.get(k) for k in ("status", "since", "until", "q")))
    kept = {"name": name, "scope": scope, "test_fraction": test_fraction, "dedupe": dedupe, "picked": picked}
    errors: dict[str, str] = {}
    fraction = None
    try:
        fraction = float(test_fraction)
    except ValueError:
        errors["test_fraction"] = "test_fraction: a number from 0 to 0.9, the share of entries held out for tests"
    if not name.strip():
        errors["name"] = "name: give the dataset a name"
    if scope == "selected" and not picked:
        errors["log_id"] = "Pick at least one row (the boxes in the first column), or choose every matching call."
    if dedupe not in ("none", "exact", "near"):
        errors["dedupe"] = "dedupe: none, exact or near"
    if not errors:
        recipe = datasets.Recipe(test_fraction=fraction, dedupe=dedupe)
        flt = _log_filter(f, picked if scope == "selected" else None)
        try:
            with state.db.session() as s:
                ds = datasets.create(s, user.project.id, name=name.strip()[:200], recipe=recipe, log_filter=flt)
                return RedirectResponse(f"/datasets/{ds.id}", status_code=303)
        except TuneforgeError as exc:
            field = {"source": "log_id", "ids": "log_id"}.get(exc.param or "", exc.param or "_")
            errors[field if field in ("name", "test_fraction", "dedupe", "log_id") else "_"] = str(exc)
    return _render(request, state, user, f, errors=errors, form=kept, status_code=400)
