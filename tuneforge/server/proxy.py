"""The logging proxy: `/v1/chat/completions` for a model this server does not host goes to an upstream.

An ASGI middleware in front of the app, so a proxied call skips request parsing and validation: the body is
read once, its `model` looked up, and the bytes sent on unchanged. Models we host (`models.is_hosted`: the
bundled bases and `ft:` models) and requests no upstream serves fall through to the app as before. The
caller authenticates with a tuneforge key (that decides the project the log belongs to); the provider key
comes from the upstream config or the caller's `X-Upstream-Authorization` header, and is never stored.

The operator's key is lent only within limits (`tuneforge.limits`): not at all with `proxy_require_caller_key`
(401), to models an upstream's allowlist names (`capture/upstreams.py`), and up to `proxy_usd_per_day` of spend
per project (`store/spend.py` says what is counted; 429 until 00:00 UTC). Every proxied call, whoever's key pays,
counts towards the project's `proxy_requests_per_minute` (429 with Retry-After). Both are kept by this server
process (`server/rate.py`): the rate in memory, the spend as this process's calls finish, checked against the
logs every SPEND_REFRESH_S seconds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response, StreamingResponse

from tuneforge.capture import record as rec
from tuneforge.capture.forward import Forwarder, UpstreamFailed
from tuneforge.capture.upstreams import Upstreams
from tuneforge.errors import TuneforgeError
from tuneforge.server.errors import error_response
from tuneforge.server.log_sink import LogSink
from tuneforge.server.rate import RateLimiter, SpendMeter
from tuneforge.store import console_sessions, models, projects, spend

log = logging.getLogger("tuneforge.server")
PATHS = {"/v1/chat/completions": "chat/completions"}
KEY_CACHE_S = 1.0  # a revoked tuneforge key stops working within this
SPEND_REFRESH_S = 10.0  # how often a project's spend is read from the logs (other processes' calls show then)
CACHE_ENTRIES = 10_000  # past this many, expired entries are dropped


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
        self.rates, self.spend = RateLimiter(), SpendMeter(self._spent, SPEND_REFRESH_S)

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
        caller_key = headers.get("x-upstream-authorization") or None
        try:
            project_id = await self._project(headers.get("authorization", ""), headers)
            tags = tags_from(headers.get("x-tuneforge-tags"))
            refused = await self._refuse(project_id, lent=caller_key is None)
        except TuneforgeError as exc:
            return error_response(401, str(exc), code=exc.code)
        except ValueError as exc:
            return error_response(400, str(exc), param="X-Tuneforge-Tags", code="invalid_tags")
        except Exception:
            log.exception("checking a proxy caller's key failed")
            return error_response(503, "The platform's store is not answering; try again shortly.",
                                  code="store_unavailable")
        if refused is not None:
            return refused
        tag, value = spend.CALLER_KEY_TAG  # set by us only: it decides what counts towards the spend limit
        tags.pop(tag, None)
        if caller_key is not None:
            tags[tag] = value
        base = {"id": rec.new_id(), "source": "proxy", "model": request["model"], "request": request,
                "stream": bool(request.get("stream")), "started_at": started, "tags": tags}
        metered = caller_key is None and self.state.settings.limits.proxy_usd_per_day is not None
        hide_usage = False
        if metered and request.get("stream") and not (request.get("stream_options") or {}).get("include_usage"):
            # a stream reports its usage only when asked: ask, so the call is priced, and keep that last chunk
            # from a caller who did not ask for it
            options = {**(request.get("stream_options") or {}), "include_usage": True}
            body, hide_usage = json.dumps({**request, "stream_options": options}).encode(), True

        def on_record(record: dict[str, Any]) -> None:
            self.sink.put(project_id, record)
            if metered:
                self.spend.add(project_id, spend.record_usd(record))

        try:
            reply = await self.forwarder.forward(upstream, path, body, dict(headers.items()), caller_key, on_record,
                                                 base, hide_usage=hide_usage)
        except UpstreamFailed as exc:
            return error_response(exc.status, str(exc), code=exc.code)
        if reply.stream is not None:
            return StreamingResponse(reply.stream, status_code=reply.status, headers=dict(reply.headers))
        return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))

    async def _refuse(self, project_id: str, *, lent: bool) -> Response | None:
        """The answer to a call the limits do not let through, else None. `lent`: the operator's key would pay."""
        limits = self.state.settings.limits
        if lent and limits.proxy_require_caller_key:
            return error_response(401, "This server does not lend its provider key: send your own in the "
                                  "X-Upstream-Authorization header ('Bearer sk-...').", code="upstream_key_required")
        wait = self.rates.take(project_id, limits.proxy_requests_per_minute)
        if wait:
            return error_response(429, f"This project is over its {limits.proxy_requests_per_minute} proxied calls a "
                                  f"minute: retry in {wait} s.", code="rate_limit_exceeded", retry_after=wait)
        if lent and limits.proxy_usd_per_day is not None:
            spent = await self.spend.spent(project_id)
            if spent >= limits.proxy_usd_per_day:
                wait = math.ceil(spend.day_start() + spend.DAY_S - time.time())
                return error_response(
                    429, f"This project has spent ${spent:.2f} of its ${limits.proxy_usd_per_day:.2f} a day on the "
                    "server's provider key: send your own in X-Upstream-Authorization, or retry after 00:00 UTC.",
                    type="insufficient_quota", code="insufficient_quota", retry_after=max(1, wait))
        return None

    async def _project(self, authorization: str, headers: Headers) -> str:
        key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        csrf = headers.get(console_sessions.CSRF_HEADER)
        if key is None and csrf:  # the web console's playground: its session cookie and CSRF token
            token = cookie_parser(headers.get("cookie", "")).get(console_sessions.COOKIE, "")
            return await _cached(self._keys, f"session:{token}:{csrf}", KEY_CACHE_S, self._lookup)
        return await _cached(self._keys, key or "", KEY_CACHE_S, self._lookup)

    def _lookup(self, key: str) -> str:
        with self.state.db.session() as s:
            if key.startswith("session:"):
                token, _, csrf = key.removeprefix("session:").partition(":")
                if project := console_sessions.project_of(s, token, csrf):
                    return project.id
                key = ""
            return projects.authenticate(s, key or None).id

    def _spent(self, project_id: str) -> float:
        with self.state.db.session() as s:
            return spend.proxied_usd_today(s, project_id)


async def _cached(cache: dict, key: str, ttl: float, lookup):
    """`lookup(key)`, run in a thread (the database is not the event loop's), remembered for `ttl` seconds."""
    hit = cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    value = await anyio.to_thread.run_sync(lookup, key)
    if len(cache) >= CACHE_ENTRIES:
        for stale in [k for k, (_, until) in cache.items() if until <= now]:
            del cache[stale]
    cache[key] = (value, time.monotonic() + ttl)
    return value


async def _read(receive, limit: int) -> bytes | None:
    """The whole body; None once it passes `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # refused before the rest is read, however the body is sent
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


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
