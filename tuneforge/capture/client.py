"""`tuneforge.OpenAI` / `tuneforge.AsyncOpenAI`: the official clients, calling the provider directly with the
user's own key, plus a record of every chat completion for the platform.

The call path copies the request (the app may append to its `messages` right after), stamps times and
appends to the reporter's queue; turning the response into JSON and sending it happen in the reporter's
thread. Streams are recorded as they are consumed and reported, put back together, when they end, fail or are
closed early. Capture problems (no platform configured, an unusable spool folder, odd tags) are logged once
as warnings; the app's own calls behave exactly as with `openai.OpenAI`. `with_raw_response` and
`with_streaming_response` calls are passed through uncaptured.

    client = tuneforge.OpenAI(tuneforge={"base_url": "http://localhost:8000", "api_key": "tf-...",
                                         "tags": {"app": "support"}})
    client.chat.completions.create(model="gpt-4o", messages=[...], tuneforge={"tags": {"user": "42"}})
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import cached_property
from typing import Any

import openai
from openai.resources.chat import AsyncChat, Chat
from openai.resources.chat.completions import AsyncCompletions, Completions

from tuneforge.capture import record as rec
from tuneforge.capture import reporter

log = logging.getLogger("tuneforge.capture")


class Capture:
    """Where a client's records go, and the tags every record of that client carries."""

    _warned: set[str] = set()

    def __init__(self, options: dict[str, Any] | None):
        options = dict(options or {}) if isinstance(options, dict) else {}
        base_url = options.get("base_url") or os.environ.get("TUNEFORGE_BASE_URL")
        api_key = options.get("api_key") or os.environ.get("TUNEFORGE_API_KEY")
        self.tags = _tags(options.get("tags"))
        self.reporter = None
        self.problem = ("no platform configured (set TUNEFORGE_BASE_URL and TUNEFORGE_API_KEY, or pass "
                        "tuneforge={'base_url': ..., 'api_key': ...})")
        if base_url and api_key:
            try:
                self.reporter = reporter.shared(base_url, api_key, options.get("spool_dir"))
            except Exception as exc:  # e.g. a spool folder that cannot be written
                self.problem = f"cannot start capturing ({type(exc).__name__}: {exc})"

    def start(self, kwargs: dict[str, Any], per_call: Any) -> _Call | None:
        if self.reporter is None:
            warn_once(self.problem, f"tuneforge: {self.problem}; calls are not captured")
            return None
        try:
            tags = {**self.tags, **_tags(per_call.get("tags"))} if isinstance(per_call, dict) else self.tags
            return _Call(self.reporter, kwargs, tags)
        except Exception as exc:
            warn_once("start", f"tuneforge: could not record a call ({type(exc).__name__}: {exc})")
            return None

    def flush(self, timeout: float | None) -> bool:
        return True if self.reporter is None else self.reporter.flush(timeout)


def warn_once(kind: str, message: str) -> None:
    if kind not in Capture._warned:
        Capture._warned.add(kind)
        log.warning(message)


def _tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        warn_once("tags", f"tuneforge: tags must be a dict of strings, not {type(tags).__name__}; ignored")
        return {}
    return {str(k)[:64]: str(v)[:500] for k, v in tags.items()}


class _Call:
    """One call in flight: its request (copied now), its timings, then its record."""

    __slots__ = ("reporter", "request", "model", "stream", "tags", "id", "t0", "started_at", "ttft", "chunks")

    def __init__(self, reporter_: reporter.Reporter, kwargs: dict[str, Any], tags: dict[str, str]):
        self.reporter, self.tags = reporter_, tags
        self.request = rec.request_body(kwargs)  # a copy: later changes to the app's lists do not reach it
        self.model, self.stream = kwargs.get("model"), bool(kwargs.get("stream"))
        self.id, self.started_at, self.t0 = rec.new_id(), time.time(), time.perf_counter()
        self.ttft: float | None = None
        self.chunks: list[Any] = []

    def succeeded(self, response: Any) -> None:
        latency = (time.perf_counter() - self.t0) * 1000
        self.reporter.report(lambda: self._line(response, latency))

    def failed(self, exc: BaseException) -> None:
        latency = (time.perf_counter() - self.t0) * 1000
        status = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        error = body if isinstance(body, dict) else {"type": type(exc).__name__, "message": str(exc)}
        partial = rec.reassemble([_dump(c) for c in self.chunks]) if self.chunks else None
        self.reporter.report(lambda: self._record(partial, status, error, latency))

    def chunk(self, chunk: Any) -> None:
        if self.ttft is None:
            self.ttft = (time.perf_counter() - self.t0) * 1000
        self.chunks.append(chunk)

    def stream_ended(self, complete: bool) -> None:
        latency = (time.perf_counter() - self.t0) * 1000
        chunks = self.chunks
        error = None if complete else {"type": "incomplete", "message": "the app stopped reading the stream"}
        self.reporter.report(lambda: self._record(rec.reassemble([_dump(c) for c in chunks]), 200, error, latency))

    def _line(self, response: Any, latency: float) -> str:
        """A successful call's record as JSON text, the response serialized by pydantic's own (fast) encoder."""
        head = json.dumps(self._record(None, 200, None, latency), separators=(",", ":"))
        return head[:-1] + ',"response":' + response.model_dump_json(exclude_unset=True, warnings=False) + "}"

    def _record(self, response: dict | None, status: int | None, error: Any, latency: float) -> dict[str, Any]:
        record = {
            "id": self.id, "source": "sdk", "model": self.model, "request": self.request, "status": status,
            "error": error,
            "started_at": self.started_at, "latency_ms": round(latency, 3),
            "ttft_ms": None if self.ttft is None else round(self.ttft, 3),
            "stream": self.stream, "tags": self.tags,
        }
        if response is not None:
            record["response"] = response
        return record


def _dump(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else obj.model_dump(mode="json", exclude_unset=True, warnings=False)


def _tee(call: _Call, iterator):
    complete = False
    try:
        for chunk in iterator:
            call.chunk(chunk)
            yield chunk
        complete = True
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            call.failed(exc)
            raise
    if complete or call.chunks:
        call.stream_ended(complete)


async def _atee(call: _Call, iterator):
    complete = False
    try:
        async for chunk in iterator:
            call.chunk(chunk)
            yield chunk
        complete = True
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            call.failed(exc)
            raise
    if complete or call.chunks:
        call.stream_ended(complete)


class _CapturedCompletions(Completions):
    def create(self, *args: Any, tuneforge: dict[str, Any] | None = None, **kwargs: Any):
        return self._captured(super().create, args, kwargs, tuneforge)

    def parse(self, *args: Any, tuneforge: dict[str, Any] | None = None, **kwargs: Any):
        """Structured outputs (`response_format=SomeModel`): captured like `create`."""
        return self._captured(super().parse, args, kwargs, tuneforge)

    def _captured(self, method, args, kwargs, tuneforge):
        call = self._client._tuneforge.start(kwargs, tuneforge)
        if call is None:
            return method(*args, **kwargs)
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        if isinstance(result, openai.Stream):
            tee = result._iterator = _tee(call, result._iterator)
            close = result.close

            def close_both() -> None:  # an app that closes early still gets its partial call recorded
                close()
                tee.close()

            result.close = close_both
        elif hasattr(result, "model_dump_json"):
            call.succeeded(result)
        return result


class _CapturedAsyncCompletions(AsyncCompletions):
    async def create(self, *args: Any, tuneforge: dict[str, Any] | None = None, **kwargs: Any):
        return await self._captured(super().create, args, kwargs, tuneforge)

    async def parse(self, *args: Any, tuneforge: dict[str, Any] | None = None, **kwargs: Any):
        return await self._captured(super().parse, args, kwargs, tuneforge)

    async def _captured(self, method, args, kwargs, tuneforge):
        call = self._client._tuneforge.start(kwargs, tuneforge)
        if call is None:
            return await method(*args, **kwargs)
        try:
            result = await method(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        if isinstance(result, openai.AsyncStream):
            tee = result._iterator = _atee(call, result._iterator)
            close = result.close

            async def close_both() -> None:
                await close()
                await tee.aclose()

            result.close = close_both
        elif hasattr(result, "model_dump_json"):
            call.succeeded(result)
        return result


class _Chat(Chat):
    @cached_property
    def completions(self) -> Completions:
        return _CapturedCompletions(self._client)


class _AsyncChat(AsyncChat):
    @cached_property
    def completions(self) -> AsyncCompletions:
        return _CapturedAsyncCompletions(self._client)


class _Capturing:
    """What both clients add: the `tuneforge=` option, copies that keep capturing, and `flush`."""

    def __init__(self, *args: Any, tuneforge: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._tuneforge = Capture(tuneforge)

    def copy(self, *args: Any, **kwargs: Any):
        client = super().copy(*args, **kwargs)
        client._tuneforge = self._tuneforge
        return client

    with_options = copy

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every captured call is stored on the platform: True, or False if `timeout` passed
        first (the rest stays spooled on disk and is delivered later). It blocks: from async code, call it
        in a thread or at shutdown."""
        return self._tuneforge.flush(timeout)


class OpenAI(_Capturing, openai.OpenAI):
    """`openai.OpenAI`, capturing every chat completion. Extra option: `tuneforge={base_url, api_key, tags,
    spool_dir}` (defaults: $TUNEFORGE_BASE_URL, $TUNEFORGE_API_KEY)."""

    @cached_property
    def chat(self) -> Chat:
        return _Chat(self)


class AsyncOpenAI(_Capturing, openai.AsyncOpenAI):
    """`openai.AsyncOpenAI`, capturing every chat completion; options as for `tuneforge.OpenAI`."""

    @cached_property
    def chat(self) -> AsyncChat:
        return _AsyncChat(self)
