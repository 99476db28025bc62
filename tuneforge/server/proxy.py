"""The logging proxy: `/v1/chat/completions` for a model this server does not host goes to an upstream.

An ASGI middleware in front of the app, so a proxied call skips request parsing and validation: the body is
read once, its `model` looked up, and the bytes sent on unchanged. Models we host (`models.is_hosted`: the
bundled bases and `ft:` models) and requests no upstream serves fall through to the app as before. The
caller authenticates with a tuneforge key (that decides the project the log belongs to); the provider key
comes from the upstream config or the caller's `X-Upstream-Authorization` header, and is never stored.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse

from tuneforge.capture import record as rec
from tuneforge.capture.forward import Forwarder, UpstreamFailed
from tuneforge.capture.upstreams import Upstreams
from tuneforge.errors import TuneforgeError
from tuneforge.server.errors import error_response
from tuneforge.server.log_sink import LogSink
from tuneforge.store import models, projects

log = logging.getLogger("tuneforge.server")
PATHS = {"/v1/chat/completions": "chat/completions"}
KEY_CACHE_S = 30.0


def tags_from(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    try:
        tags = json.loads(header)
    except ValueError:
        tags = None
    if not isinstance(tags, dict):
        raise ValueError('X-Tuneforge-Tags must be a JSON object, like {"feature": "summary"}')
    return {str(k): str(v) for k, v in tags.items()}


class ProxyMiddleware:
    def __init__(self, app, *, state, upstreams: Upstreams, sink: LogSink, forwarder: Forwarder):
        self.app, self.state, self.upstreams, self.sink, self.forwarder = app, state, upstreams, sink, forwarder
        self._keys: dict[str, tuple[str, float]] = {}

    async def __call__(self, scope, receive, send):
        path = PATHS.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if path is None or not self.upstreams:
            return await self.app(scope, receive, send)
        try:
            body = await _read(receive, self.state.settings.max_body_bytes)
        except ConnectionAbortedError:  # the caller went away mid-body: nothing to forward, nobody to answer
            return
        if body is None:
            limit = self.state.settings.max_body_bytes >> 20
            return await error_response(413, f"Request body is over the {limit} MB limit: send less.",
                                        code="request_too_large")(scope, receive, send)
        request = _parse(body)
        model = request.get("model") if request is not None else None
        upstream = self.upstreams.find(model) if isinstance(model, str) and not models.is_hosted(model) else None
        if upstream is None:
            return await self.app(scope, _replay(body, receive), send)
        response = await self._proxy(scope, upstream, path, body, request)
        await response(scope, receive, send)

    async def _proxy(self, scope, upstream, path: str, body: bytes, request: dict[str, Any]) -> Response:
        started = time.time()
        headers = Headers(scope=scope)
        try:
            project_id = await self._project(headers.get("authorization", ""))
            tags = tags_from(headers.get("x-tuneforge-tags"))
        except TuneforgeError as exc:
            return error_response(401, str(exc), code=exc.code)
        except ValueError as exc:
            return error_response(400, str(exc), param="X-Tuneforge-Tags", code="invalid_tags")
        except Exception:
            log.exception("checking a proxy caller's key failed")
            return error_response(503, "The platform's store is not answering; try again shortly.",
                                  code="store_unavailable")
        base = {"id": rec.new_id(), "source": "proxy", "model": request["model"], "request": request,
                "stream": bool(request.get("stream")), "started_at": started, "tags": tags}
        try:
            reply = await self.forwarder.forward(
                upstream, path, body, dict(headers.items()), headers.get("x-upstream-authorization"),
                lambda record: self.sink.put(project_id, record), base,
            )
        except UpstreamFailed as exc:
            return error_response(exc.status, str(exc), code=exc.code)
        if reply.stream is not None:
            return StreamingResponse(reply.stream, status_code=reply.status, headers=dict(reply.headers))
        return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))

    async def _project(self, authorization: str) -> str:
        key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        hit = self._keys.get(key or "")
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        project_id = await anyio.to_thread.run_sync(self._lookup, key)  # the database is not the event loop's
        self._keys[key] = (project_id, time.monotonic() + KEY_CACHE_S)
        return project_id

    def _lookup(self, key: str | None) -> str:
        with self.state.db.session() as s:
            return projects.authenticate(s, key).id


async def _read(receive, limit: int) -> bytes | None:
    """The whole body; None once it passes `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
        if size > limit:
            return None


def _parse(body: bytes) -> dict[str, Any] | None:
    """The JSON object a request body holds, or None."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _replay(body: bytes, receive):
    """A receive() that hands the app the body we already read."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
