"""Mount the console on the API's app: its pages, its static files, and HTML error pages for its paths."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from tuneforge.console import auth, live
from tuneforge.console.pages import ALL
from tuneforge.console.render import page

STATIC = Path(__file__).with_name("static")


def error_page(request: Request, status: int, message: str):
    """What a console path answers instead of the API's JSON error (the server's handlers call this)."""
    try:
        user = auth.signed_in(request, request.app.state.tuneforge)
    except auth.SignInRequired:
        user = None
    return page(request, "error.html", user, status_code=status, status=status, message=message)


def _is_console(path: str) -> bool:
    return not (path.startswith("/v1/") or path == "/v1" or path in ("/health", "/docs", "/openapi.json")
                or path.startswith("/docs/"))


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(auth.router)
    app.include_router(live.router)
    for module in ALL:
        app.include_router(module.router)
    app.state.html_errors = (_is_console, error_page)

    @app.exception_handler(auth.SignInRequired)
    def _signin(request: Request, _exc: auth.SignInRequired):
        return auth.to_signin(request)

    @app.exception_handler(auth.CrossSite)
    def _cross_site(request: Request, _exc: auth.CrossSite):
        return error_page(request, 403, "This request did not carry this page's security token, or came from "
                                        "another site: reload the page and try again.")
