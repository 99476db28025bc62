"""The server's outermost layer: every response carries an `x-request-id`, and request bodies are capped as they
arrive.

A pure ASGI middleware around the whole app, Starlette's own 500 handling and the logging proxy included, so no
response leaves without its id and no body reaches anything uncounted. The cap counts bytes as the server
receives them, chunked bodies too: once past it the client gets a 413 at once and the app sees the client as
gone (nothing buffers the body). A `Content-Length` over the cap is answered before the app runs at all.
"""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI

from tuneforge.server.errors import error_response

UPLOADS = {"/v1/files", "/datasets/upload"}  # streamed to a capped file by server/uploads.py: the upload cap
FORM_SLACK = 1 << 20  # an upload's other form fields and multipart framing, beside the file (capped on its own)
REQUEST_ID = b"x-request-id"
UPSTREAM_REQUEST_ID = b"x-upstream-request-id"  # a proxied upstream's own id, kept beside ours
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def install(app: FastAPI, state) -> None:
    """Wrap the app's whole middleware stack (built on its first request) in the guard."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: Guard(build(), state)


class Guard:
    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        settings = self.state.settings
        upload = scope["path"] in UPLOADS
        limit = settings.max_upload_bytes if upload else settings.max_body_bytes
        exchange = _Exchange(scope, receive, send, limit + FORM_SLACK if upload else limit, limit)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > exchange.limit):
            return await exchange.too_large()
        await self.app(scope, exchange.receive, exchange.send)


class _Exchange:
    """One request's trip through the guard: its id, and the bytes of its body counted so far."""

    def __init__(self, scope, receive, send, limit: int, shown_limit: int):
        self.scope, self._receive, self._send = scope, receive, send
        self.limit, self.shown_limit = limit, shown_limit
        self.id = _request_id(scope)
        self.received = 0
        self.started = False  # the response has begun
        self.cut = False  # the body passed the limit: the app is told the client left
        self.answered = False  # we sent the 413: whatever the app sends after it goes nowhere

    async def receive(self):
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.cut = True
                if not self.started:
                    await self.too_large()
                return {"type": "http.disconnect"}
        return message

    async def send(self, message):
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
            message = {**message, "headers": _with_id(message.get("headers") or [], self.id)}
        await self._send(message)

    async def too_large(self) -> None:
        response = error_response(413, f"Request body is over the {self.shown_limit >> 20} MB limit: send less.",
                                  code="request_too_large")
        await response(self.scope, self._receive, self.send)
        self.answered = True


def _request_id(scope) -> bytes:
    """The client's `X-Request-Id` when it is short and plain, else a new `req_…`; the app sees it as that header."""
    headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_ID]
    sent = [v for k, v in scope["headers"] if k == REQUEST_ID]
    request_id = sent[0] if len(sent) == 1 and _SANE_ID.fullmatch(sent[0]) else f"req_{uuid.uuid4().hex}".encode()
    scope["headers"] = [*headers, (REQUEST_ID, request_id)]
    return request_id


def _with_id(headers, request_id: bytes) -> list:
    """The response's headers with our id; an id already there (a proxied upstream's) is kept under another name."""
    out = []
    for key, value in headers:
        if key.lower() == REQUEST_ID:
            if value == request_id:
                continue
            key = UPSTREAM_REQUEST_ID
        out.append((key, value))
    out.append((REQUEST_ID, request_id))
    return out
