"""One dataset's page: its settings and counts, its entries a page at a time (split, the last question and the
answer, label, and lineage: the request log, file line or relabel each came from), its pruning rules (edited
here), a relabel with a chosen teacher (a `relabel` job, accepted as `POST /v1/datasets/{id}/relabel` accepts it,
followed live), and its export (the same lines as the API's export, as a download)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

from tuneforge.console.auth import Acting, User
from tuneforge.console.pages.forms import cancel_then, status_of
from tuneforge.console.render import page
from tuneforge.errors import Conflict, RateLimited, UserError
from tuneforge.jobs import relabel as relabel_job
from tuneforge.server.capture_protocol import RelabelCreate
from tuneforge.server.deps import State, StateDep
from tuneforge.server.routes import datasets as api
from tuneforge.store import datasets
from tuneforge.store.console_sessions import SignedIn
from tuneforge.store.tables import DatasetEntry

router = APIRouter(include_in_schema=False)
ENTRIES_PAGE = 50
CLIP = 400  # characters of a question or answer shown in the entries table
Split = Literal["train", "test"]


@router.get("/datasets/{dataset_id}")
def detail(request: Request, state: StateDep, user: User, dataset_id: str, split: Split | None = None,
           after: Annotated[int | None, Query(ge=0)] = None):
    return _detail(request, state, user, dataset_id, split=split, after=after)


def _detail(request: Request, state: State, user: SignedIn, dataset_id: str, *, split: str | None = None,
            after: int | None = None, status: int = 200, **forms: Any):
    """The page; `forms` carries a failed form's errors and what the user typed (`pruning_errors`, `rules`,
    `relabel_errors`, `relabel`)."""
    with state.db.session() as s:
        ds = datasets.get(s, dataset_id, user.project.id)
        obj = api.to_api(s, ds)
        rows, more = datasets.entry_page(s, ds.id, split, after=after, limit=ENTRIES_PAGE)
        entries = [entry_view(e) for e in rows]
    forms = {"pruning_errors": {}, "rules": obj.pruning_rules, "relabel_errors": {}, "relabel": {}, **forms}
    return page(request, "dataset_detail.html", user, status_code=status, ds=obj, entries=entries, more=more,
                split=split, after=after, source=source_text, saved=request.query_params.get("saved"), **forms)


@router.post("/datasets/{dataset_id}/pruning")
def set_pruning(request: Request, state: StateDep, user: Acting, dataset_id: str,
                rule: Annotated[list[str] | None, Form()] = None):
    rules = [typed_rule(r) for r in rule or []]
    try:
        with state.db.session() as s:
            datasets.set_pruning_rules(s, datasets.get(s, dataset_id, user.project.id), rules)
    except UserError as exc:
        return _detail(request, state, user, dataset_id, status=422, rules=rules,
                       pruning_errors={"pruning_rules": str(exc)})
    return RedirectResponse(f"/datasets/{dataset_id}?saved=pruning#pruning", status_code=303)


@router.post("/datasets/{dataset_id}/relabel")
def relabel(request: Request, state: StateDep, user: Acting, dataset_id: str,
            model: Annotated[str, Form(max_length=300)] = "", name: Annotated[str, Form(max_length=1000)] = ""):
    """A new dataset, filled by a relabel job with `model`'s answers; its page follows the job."""
    errors, status = {}, 422
    if not model.strip():
        errors["model"] = "Name the teacher: a model an upstream serves (e.g. gpt-4o)."
    if len(name) > 200:
        errors["name"] = "At most 200 characters."
    if not errors:
        try:
            with state.db.session() as s:
                body = RelabelCreate(model=model.strip(), name=name.strip() or None)
                job = relabel_job.KIND.accept(s, user.project, body, dataset_id=dataset_id)
            return RedirectResponse(f"/datasets/{relabel_job.KIND.spec(job).dataset}", status_code=303)
        except (UserError, Conflict, RateLimited) as exc:
            errors["model" if exc.param == "model" else "_"] = str(exc)
            status = status_of(exc)
    return _detail(request, state, user, dataset_id, status=status, relabel={"model": model, "name": name},
                   relabel_errors=errors)


@router.post("/datasets/{dataset_id}/cancel")
def cancel(request: Request, state: StateDep, user: Acting, dataset_id: str):
    """Stop the relabel job filling this dataset (as `POST /v1/datasets/{id}/cancel`)."""
    return cancel_then(lambda: api.cancel(state, user.project, dataset_id),
                       lambda why: _detail(request, state, user, dataset_id, status=409, relabel_errors={"_": why}),
                       f"/datasets/{dataset_id}")


def typed_rule(text: str) -> str:
    """A rule as typed in a textarea: browsers send its line breaks as CRLF, and the spaces or line breaks around a
    pasted text are not part of it (a rule must match the messages' text exactly)."""
    return text.replace("\r\n", "\n").strip()


@router.get("/datasets/{dataset_id}/export")
def export(state: StateDep, user: User, dataset_id: str, split: Split | None = None):
    """The API's export (OpenAI fine-tuning JSONL, pruning rules applied), as a file to save."""
    response = api.export(state, user.project, dataset_id, split)
    response.headers["Content-Disposition"] = f'attachment; filename="{dataset_id}-{split or "all"}.jsonl"'
    return response


# --- how the page shows things
def source_text(source: dict[str, Any]) -> str:
    """Where a dataset's candidates came from, in a few words."""
    if "file" in source:
        return f"upload {source['file']}"
    if "relabel" in source:
        return f"relabel of {source['relabel'].get('dataset')} by {source['relabel'].get('model')}"
    flt = source.get("logs") or {}
    if flt.get("ids"):
        return f"{len(flt['ids'])} selected request logs"
    parts = [f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in flt.items() if v and k != "ids"]
    return "request logs" + (f" ({'; '.join(parts)})" if parts else "")


def entry_view(e: DatasetEntry) -> dict[str, Any]:
    """An entry as a table row: its last user message and its answer (clipped), and its lineage as links."""
    users = [m for m in e.messages[:-1] if m.get("role") == "user"]
    return {"position": e.position, "split": e.split, "label": e.label, "answer_model": e.answer_model,
            "question": _clip(_text(users[-1])) if users else "", "answer": _clip(_text(e.messages[-1])),
            "lineage": lineage(e.lineage)}


def lineage(where: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(text, link or None) for each step an entry came through: a request log, an uploaded file's line, a
    relabel."""
    out: list[tuple[str, str | None]] = []
    if where.get("log"):
        out.append((f"log {where['log']}", f"/logs/{where['log']}"))
    if where.get("file"):
        out.append((f"{where['file']} line {where.get('line')}", None))
    if where.get("relabel"):
        out.append((f"relabeled by {where['relabel'].get('model')}", None))
    return out


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = message.get("tool_calls") or []
    called = [f"{c.get('function', {}).get('name')}({c.get('function', {}).get('arguments', '')})" for c in calls
              if isinstance(c, dict)]
    text = content if isinstance(content, str) else "" if content is None else json.dumps(content)
    return " ".join(filter(None, [text, *called]))


def _clip(text: str) -> str:
    return text if len(text) <= CLIP else text[:CLIP] + "…"
