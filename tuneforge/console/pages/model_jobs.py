"""The models page's jobs: a merge's page (its config or adapters, status and events live, the search report of a
merge search) and a bake-off's page (its bases and datasets, child jobs, ranking, and its report).

The reports are the self-contained pages the jobs wrote (`report.html`, `search.html`), served as the API serves
them, scoped to the project, and shown in a sandboxed frame: their inline script runs in an opaque origin, with
no access to the console's session, and the response's own CSP sandboxes them when opened on their own too."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi import APIRouter, Request

from tuneforge.console.auth import Acting, User
from tuneforge.console.pages.forms import cancel_then
from tuneforge.console.render import page
from tuneforge.server.deps import State, StateDep
from tuneforge.server.routes import bakeoffs as bakeoffs_api
from tuneforge.server.routes import merges as merges_api
from tuneforge.store import jobs
from tuneforge.store.console_sessions import SignedIn

router = APIRouter(include_in_schema=False)
EVENTS = 50  # newest events shown (the live stream then adds the rest as they come)
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
              "img-src data:")
CHILD_PAGES = {"fine_tune": "/fine-tunes/{}", "merge": "/models/merges/{}"}  # a bake-off's children, by kind


@router.get("/models/merges/{merge_id}")
def merge_page(request: Request, state: StateDep, user: User, merge_id: str):
    return _merge_page(request, state, user, merge_id)


def _merge_page(request: Request, state: State, user: SignedIn, merge_id: str, *, error: str | None = None,
                status: int = 200):
    with state.db.session() as s:
        job = jobs.get(s, merge_id, project_id=user.project.id, kind=merges_api.KIND.name)
        obj = merges_api.to_api(job)
        events = _events(s, job.id)
        has_search = (Path(job.out_dir) / "search.html").exists()
    config = yaml.safe_dump(obj.config, sort_keys=False, allow_unicode=True) if obj.config else None
    return page(request, "models_merge.html", user, status_code=status, job=obj, config=config, events=events,
                has_search=has_search, error=error)


@router.post("/models/merges/{merge_id}/cancel")
def cancel_merge(request: Request, state: StateDep, user: Acting, merge_id: str):
    return cancel_then(lambda: merges_api.cancel_merge(state, user.project, merge_id),
                       lambda why: _merge_page(request, state, user, merge_id, error=why, status=409),
                       f"/models/merges/{merge_id}")


@router.get("/models/merges/{merge_id}/search.html")
def merge_search_report(state: StateDep, user: User, merge_id: str):
    return _sandboxed(merges_api.get_search_html(state, user.project, merge_id))


@router.get("/models/bakeoffs/{bakeoff_id}")
def bakeoff_page(request: Request, state: StateDep, user: User, bakeoff_id: str):
    return _bakeoff_page(request, state, user, bakeoff_id)


def _bakeoff_page(request: Request, state: State, user: SignedIn, bakeoff_id: str, *, error: str | None = None,
                  status: int = 200):
    with state.db.session() as s:
        job = jobs.get(s, bakeoff_id, project_id=user.project.id, kind=bakeoffs_api.KIND.name)
        obj = bakeoffs_api.to_api(s, job)
        events = _events(s, job.id)
    children = [(c, CHILD_PAGES[c.kind].format(c.id) if c.kind in CHILD_PAGES else None) for c in obj.children]
    return page(request, "models_bakeoff.html", user, status_code=status, job=obj, children=children, events=events,
                error=error)


@router.post("/models/bakeoffs/{bakeoff_id}/cancel")
def cancel_bakeoff(request: Request, state: StateDep, user: Acting, bakeoff_id: str):
    return cancel_then(lambda: bakeoffs_api.cancel_bakeoff(state, user.project, bakeoff_id),
                       lambda why: _bakeoff_page(request, state, user, bakeoff_id, error=why, status=409),
                       f"/models/bakeoffs/{bakeoff_id}")


@router.get("/models/bakeoffs/{bakeoff_id}/report.html")
def bakeoff_report(state: StateDep, user: User, bakeoff_id: str):
    return _sandboxed(bakeoffs_api.get_report_html(state, user.project, bakeoff_id))


def _sandboxed(response):
    response.headers["Content-Security-Policy"] = REPORT_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _events(s, job_id: str) -> list[dict]:
    """The newest EVENTS messages (progress metrics are drawn as a progress line instead), newest first."""
    rows, _ = jobs.events(s, job_id, after=None, limit=EVENTS)
    return [{"seq": e.seq, "created_at": e.created_at, "level": e.level, "type": e.type, "message": e.message}
            for e in rows if e.type != "metrics"]
