"""Settings: the project's API keys (create, revoke), where the proxy forwards models (read only: the operator sets
upstreams in the server's environment, and a tenant must not be able to reroute the server's traffic), and the
project's own model prices over the shared pricing table."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

from tuneforge.capture import upstreams as upstreams_
from tuneforge.console.auth import Acting, User
from tuneforge.console.render import page
from tuneforge.errors import NotFound, UserError
from tuneforge.server.deps import StateDep
from tuneforge.store import console_sessions, logs, prices, projects
from tuneforge.store.console_sessions import SignedIn

router = APIRouter(include_in_schema=False)
KEYS_PAGE = 50
MAX_ACTIVE_KEYS = 100  # per project: a leaked session cannot mint keys without end
MAX_SEEN_MODELS = 100  # models from the logs listed under pricing (with the project's own prices besides)


def _public_url(url: str) -> str:
    """An upstream's URL without what may carry a secret (user:password@, a query string such as ?api-key=)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else "(not a URL)"


def upstream_routes(config: upstreams_.Upstreams) -> list[dict]:
    """Where the proxy forwards models (the server's own configuration, `app.state.upstreams`), as a tenant may
    see it: patterns, URL and whether the operator's key is set, never the key or its variable's contents."""
    rows = [{"models": ", ".join(patterns), "url": _public_url(u.url), "key": u.api_key() is not None}
            for patterns, u in config.routes]
    if config.default is not None:
        rows.append({"models": "every other model", "url": _public_url(config.default.url),
                     "key": config.default.api_key() is not None})
    return rows


def _render(request: Request, state: StateDep, user: SignedIn, *, keys_after: str | None = None,
            new_key: str | None = None, price_form: dict | None = None, errors: dict | None = None,
            notice: str | None = None, status_code: int = 200):
    with state.db.session() as s:
        keys, more_keys = projects.keys_page(s, user.project.id, after=keys_after, limit=KEYS_PAGE)
        seen = logs.recent_models(s, user.project.id)[:MAX_SEEN_MODELS]
        priced = prices.overview(s, user.project.id, seen)
    routes, routes_error = upstream_routes(request.app.state.upstreams), None
    response = page(request, "settings.html", user, status_code=status_code, keys=keys, more_keys=more_keys,
                    keys_after=keys_after, new_key=new_key, routes=routes, routes_error=routes_error,
                    limits=state.settings.limits, priced=priced, seen=seen, price_form=price_form or {},
                    errors=errors or {}, notice=notice, max_usd=prices.MAX_USD)
    if new_key:
        response.headers["Cache-Control"] = "no-store"  # the key is shown once: not kept in any cache
    return response


def _notice(state: StateDep, user: SignedIn, revoked: str | None, priced: str | None) -> str | None:
    """The line confirming what a redirect says was just done (only what the store confirms: a crafted link
    cannot put words on the page)."""
    with state.db.session() as s:
        if revoked:
            try:
                key = projects.get_key(s, revoked, project_id=user.project.id)
            except NotFound:
                key = None
            if key is not None and key.revoked_at is not None:
                return f"Key {key.prefix}… revoked: calls with it are refused from now on."
        if priced and any(p.model == priced for p in prices.list_(s, user.project.id)):
            return f"Price for {priced} saved: calls captured from now on are priced with it."
    return None


@router.get("/settings")
def index(request: Request, state: StateDep, user: User, keys_after: Annotated[str | None, Query(max_length=64)] = None,
          revoked: Annotated[str | None, Query(max_length=64)] = None,
          priced: Annotated[str | None, Query(max_length=300)] = None):
    notice = _notice(state, user, revoked, priced)
    return _render(request, state, user, keys_after=keys_after, notice=notice)


@router.post("/settings/keys")
def create_key(request: Request, state: StateDep, user: Acting):
    with state.db.session() as s:
        if projects.active_keys(s, user.project.id) >= MAX_ACTIVE_KEYS:
            errors = {"_": f"This project has {MAX_ACTIVE_KEYS} keys in use, its limit: revoke one first."}
            key = None
        else:
            _, key = projects.new_key(s, project=user.project.name)
            errors = None
    return _render(request, state, user, new_key=key, errors=errors, status_code=409 if errors else 201)


@router.get("/settings/keys/{key_id}/revoke")
def confirm_revoke(request: Request, state: StateDep, user: User, key_id: str):
    with state.db.session() as s:
        key = projects.get_key(s, key_id, project_id=user.project.id)
    return page(request, "settings_revoke.html", user, key=key, own=key.id == user.key_id)


@router.post("/settings/keys/{key_id}/revoke")
def revoke_key(request: Request, state: StateDep, user: Acting, key_id: str):
    with state.db.session() as s:
        row, _ = projects.revoke_key(s, key_id, project_id=user.project.id)
        if row.id == user.key_id:  # this session's own key: the session ends with it
            console_sessions.sign_out(s, request.cookies.get(console_sessions.COOKIE))
            response = RedirectResponse("/signin", status_code=303)
            response.delete_cookie(console_sessions.COOKIE, path="/", httponly=True, samesite="lax")
            return response
    return RedirectResponse(f"/settings?revoked={quote(key_id)}#keys", status_code=303)


def _price(text: str, field: str, errors: dict) -> float:
    try:
        return float(text.strip())
    except ValueError:
        errors[field] = f"{field}: a number of USD per million tokens, like 2.50"
        return 0.0


@router.post("/settings/prices")
def set_price(request: Request, state: StateDep, user: Acting, model: Annotated[str, Form(max_length=1000)] = "",
              input_usd: Annotated[str, Form(alias="input", max_length=100)] = "",
              output_usd: Annotated[str, Form(alias="output", max_length=100)] = ""):
    form = {"model": model, "input": input_usd, "output": output_usd}
    errors: dict[str, str] = {}
    usd = {field: _price(form[field], field, errors) for field in ("input", "output")}
    if not errors:
        try:
            with state.db.session() as s:
                saved = prices.set_(s, user.project.id, model, usd["input"], usd["output"]).model
        except UserError as exc:
            errors[exc.param or "_"] = str(exc)
    if errors:
        return _render(request, state, user, price_form=form, errors=errors, status_code=422)
    return RedirectResponse(f"/settings?priced={quote(saved)}#prices", status_code=303)


@router.post("/settings/prices/delete")
def delete_price(state: StateDep, user: Acting, model: Annotated[str, Form(max_length=1000)] = ""):
    with state.db.session() as s:
        prices.remove(s, user.project.id, model)
    return RedirectResponse("/settings#prices", status_code=303)
