"""Templates and the filters they use; `page` renders one for a signed-in user."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from tuneforge.store.console_sessions import SignedIn

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))

# (path, label): the navigation, in order
NAV = [("/", "Overview"), ("/logs", "Request logs"), ("/datasets", "Datasets"), ("/fine-tunes", "Fine-tunes"),
       ("/evals", "Evals"), ("/models", "Models & merges"), ("/playground", "Playground"), ("/settings", "Settings")]


def _when(ts: float | int | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts)))


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def _pretty(v: Any) -> str:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    return json.dumps(v, indent=2, ensure_ascii=False)


def _num(v: float | int | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def _tojson_attr(v: Any) -> Markup:
    """JSON for an HTML attribute or a <script type=application/json> (escaped so it cannot close the tag)."""
    text = json.dumps(v, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("'", "\\u0027"))


templates.env.filters.update(when=_when, usd=_usd, pretty=_pretty, num=_num, json_attr=_tojson_attr)


def nav_active(path: str) -> str:
    """The navigation entry a path belongs to."""
    best = "/"
    for href, _ in NAV:
        if href != "/" and (path == href or path.startswith(href + "/")):
            best = href
    return best


def page(request: Request, name: str, user: SignedIn | None, status_code: int = 200, **context: Any):
    """Render template `name` with the user, their CSRF token and the navigation."""
    return templates.TemplateResponse(request, name, {
        "user": user, "csrf": user.csrf if user else "", "nav": NAV, "active": nav_active(request.url.path),
        **context,
    }, status_code=status_code)


def fragment(request: Request, name: str, user: SignedIn, status_code: int = 200, **context: Any):
    """A partial for htmx to swap in (no layout)."""
    return page(request, name, user, status_code=status_code, **context)
