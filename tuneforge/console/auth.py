"""Signing in and out, who is signed in, and the checks on every state-changing request.

The cookie holds a random session token: HttpOnly (scripts cannot read it), SameSite=Lax (other sites' forms and
scripts do not carry it), Secure when the console is served over HTTPS. A POST, PUT, PATCH or DELETE must also
carry the session's CSRF token (a form's hidden `csrf_token`, or the `X-CSRF-Token` header htmx and the console's
scripts send), and when the browser says where it comes from (Origin, else Referer), that must be this server.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse

from tuneforge.console.render import page
from tuneforge.errors import Unauthorized
from tuneforge.server.deps import StateDep
from tuneforge.store import console_sessions
from tuneforge.store.console_sessions import COOKIE, CSRF_HEADER, LIFETIME_S, SignedIn

router = APIRouter(include_in_schema=False)
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class CrossSite(Exception):
    """A state-changing request without this session's CSRF token, or from another site."""


def signed_in(request: Request, state: StateDep) -> SignedIn:
    with state.db.session() as s:
        user = console_sessions.resolve(s, request.cookies.get(COOKIE))
    if user is None:
        raise SignInRequired()
    return user


def same_origin(request: Request) -> bool:
    """The browser says the request comes from this host (Origin, else Referer), or says nothing."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    return urlsplit(source).netloc == request.headers.get("host", request.url.netloc)


async def checked(request: Request, user: Annotated[SignedIn, Depends(signed_in)]) -> SignedIn:
    """The signed-in user of a state-changing request, once its CSRF token and origin check out."""
    if request.method in UNSAFE:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and "form" in request.headers.get("content-type", ""):
            sent = (await request.form()).get("csrf_token")  # (bodies here are within the guard's body cap)
        verify(request, user, sent)
    return user


def verify(request: Request, user: SignedIn, sent: object) -> None:
    """CrossSite unless `sent` is the session's CSRF token and the request comes from this site. (An upload route
    calls this itself once its capped reader has the form's fields.)"""
    if not isinstance(sent, str) or not hmac.compare_digest(sent, user.csrf) or not same_origin(request):
        raise CrossSite()


User = Annotated[SignedIn, Depends(signed_in)]
Acting = Annotated[SignedIn, Depends(checked)]


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never `//other.example` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/signin")
def signin_form(request: Request, next: str = "/"):
    return page(request, "signin.html", None, next=_safe_next(next), error=None)


@router.post("/signin")
def signin(request: Request, state: StateDep, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"):
    if not same_origin(request):
        raise CrossSite()
    try:
        with state.db.session() as s:
            token, _ = console_sessions.sign_in(s, key)
    except Unauthorized as exc:
        return page(request, "signin.html", None, status_code=401, next=_safe_next(next), error=str(exc))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token, max_age=LIFETIME_S, path="/", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response


@router.post("/signout")
def signout(request: Request, state: StateDep, _user: Acting):
    with state.db.session() as s:
        console_sessions.sign_out(s, request.cookies.get(COOKIE))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


def to_signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/signin" if target == "/" else f"/signin?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):  # htmx follows this header with a full page load
        response = RedirectResponse(url, status_code=200)
        response.headers["HX-Redirect"] = url
        return response
    return RedirectResponse(url, status_code=303)
