"""Every error leaves the server in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Routes raise tuneforge's domain errors; the handlers here are the one place they become HTTP responses.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from tuneforge.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TuneforgeError,
    Unauthorized,
    UserError,
)

log = logging.getLogger("tuneforge.server")

class TooLarge(UserError):
    """The request body is over the server's limit."""


# most specific first
STATUS = {TooLarge: 413, UserError: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
          RateLimited: 429, ConfigError: 503}


def error_response(status: int, message: str, *, type: str | None = None, param: str | None = None,
                   code: str | None = None, retry_after: int | None = None) -> JSONResponse:
    type = type or ("server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error")
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=status, headers=headers or None)


def _html(request: Request, status: int, message: str):
    """The web console's page for an error on one of its paths (it installs `app.state.html_errors`), else None."""
    hook = getattr(request.app.state, "html_errors", None)
    if hook is None or not hook[0](request.url.path):
        return None
    try:
        return hook[1](request, status, message)
    except Exception:  # an error page that fails falls back to the JSON error
        log.exception("the console's error page failed")
        return None


def _domain(request: Request, exc: TuneforgeError) -> Response:
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
    if (page := _html(request, status, str(exc))) is not None:
        return page
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return error_response(status, str(exc), param=exc.param, code=exc.code, retry_after=retry_after)


def _validation(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
    param = ".".join(loc) or None
    if (page := _html(request, 400, f"{param or 'input'}: {first['msg']}")) is not None:
        return page
    if first.get("type") == "json_invalid":
        return error_response(400, "We could not parse the JSON body of your request: send valid JSON.",
                              code="invalid_json")
    message = f"Invalid value for '{param}': {first['msg']}" if param else first["msg"]
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    return error_response(400, message, param=param, code="missing_required_parameter"
                          if first.get("type") == "missing" else "invalid_value")


def _http(request: Request, exc: HTTPException) -> Response:
    messages = {404: "Unknown URL: see /docs for the API's routes.", 405: "Method not allowed on this URL."}
    if (page := _html(request, exc.status_code, {404: "There is no page here.", 405: "Method not allowed here."}
                      .get(exc.status_code, str(exc.detail)))) is not None:
        return page
    return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)))


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in request %s", request.headers.get("x-request-id"), exc_info=exc)
    if (page := _html(request, 500, "The server had an error while showing this page; it has been logged.")):
        return page
    return error_response(500, "The server had an error while processing your request; it has been logged.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(TuneforgeError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
