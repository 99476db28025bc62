"""Between the HTTP routes and an engine: model lookup, bounded request preparation, token budgets, and engine
outputs as async streams.

What a request costs before it reaches the engine is bounded too: tokenizing and compiling a
`response_format` schema run in a thread (never on the event loop, where one pathological request would
freeze every route) and give up after `prepare_timeout_s`; a schema is at most `MAX_SCHEMA_BYTES`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request as HttpRequest
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import RateLimited, UserError
from tuneforge.inference.engine import Delta, Engine, Params, Request
from tuneforge.limits import Limits
from tuneforge.server.deps import State
from tuneforge.store import models

MAX_SCHEMA_BYTES = 64 << 10


@dataclass
class Loaded:
    engine: Engine
    target: models.Weights


async def load(state: State, model: str, project_id: str, slot=None) -> Loaded:
    """The engine and adapter for a model name (first use loads the base model: seconds); with the request's
    `slot`, the engine is held (not closed to make room for another model) until the request is over."""
    target = await run_in_threadpool(models.resolve, state.db, model, project_id)
    engine = await run_in_threadpool(state.engines.get, target.base, slot is not None)
    if slot is not None:
        slot.after(lambda: state.engines.release(engine))
    return Loaded(engine, target)


async def prepare(limits: Limits, fn: Callable, *args, what: str = "tokenizing the request"):
    """`fn(*args)` in a worker thread, given up (400) after `prepare_timeout_s`."""
    try:
        return await asyncio.wait_for(run_in_threadpool(fn, *args), limits.prepare_timeout_s)
    except TimeoutError:
        raise UserError(f"{what} took over {limits.prepare_timeout_s:g} s: send a smaller request",
                        code="request_too_complex") from None


async def json_constraint(limits: Limits, engine: Engine, schema: dict | None, n: int = 1) -> list:
    """`n` grammar constraints for a JSON schema (None: any JSON object), compiled off the event loop."""
    if schema is not None and len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise UserError(f"response_format's schema is over {MAX_SCHEMA_BYTES >> 10} KB: send a smaller one",
                        param="response_format", code="invalid_value")
    for pattern in _patterns(schema):
        _check_pattern(pattern)
    return await prepare(limits, lambda: [engine.json_constraint(schema) for _ in range(n)],
                         what="compiling response_format's schema")


MAX_REPEAT = 1000  # a regex quantifier's bound in a schema's `pattern`; their product at most MAX_REPEAT_PRODUCT
MAX_REPEAT_PRODUCT = 10_000  # (the grammar compiler expands bounded repeats: (a|b|c|d){1,6000} takes 10 s)
_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def _patterns(schema) -> list[str]:
    """Every regular expression in a JSON schema (`pattern` values, `patternProperties` keys)."""
    out: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                out.append(value)
            elif key == "patternProperties" and isinstance(value, dict):
                out.extend(value)
            out.extend(_patterns(value))
    elif isinstance(schema, list):
        for item in schema:
            out.extend(_patterns(item))
    return out


def _check_pattern(pattern: str) -> None:
    product = 1
    for low, high in _REPEAT.findall(pattern):
        bound = max(int(low), int(high) if high else 0)
        product *= max(bound, 1)
        if bound > MAX_REPEAT or product > MAX_REPEAT_PRODUCT:
            raise UserError(f"the schema's pattern {pattern[:60]!r} repeats too much ({{...}} bounds over "
                            f"{MAX_REPEAT}, or multiplying to over {MAX_REPEAT_PRODUCT}): use a simpler pattern or "
                            "maxLength", param="response_format", code="invalid_value")


def check_sequences(limits: Limits, count: int, param: str) -> None:
    if count > limits.max_sequences:
        raise UserError(f"This request asks for {count} sequences at once (prompts x n); the limit is "
                        f"{limits.max_sequences}: split it into smaller requests", param=param, code="invalid_value")


def check_context(engine: Engine, prompt_tokens: int, param: str = "messages") -> None:
    """400 when a prompt alone does not fit the model's context (whatever the request asks to generate)."""
    if prompt_tokens > engine.context:
        raise _too_long(engine, prompt_tokens, 0, param)


def token_budget(engine: Engine, prompt_tokens: int, requested: int | None, default: int) -> int:
    """max_tokens for a request: as asked, or what fits (up to `default`); 400 when the prompt does not fit."""
    room = engine.context - prompt_tokens
    if requested is None:
        if room < 1:
            raise _too_long(engine, prompt_tokens, 1)
        return min(default, room)
    if requested > room:
        raise _too_long(engine, prompt_tokens, requested)
    return requested


def _too_long(engine: Engine, prompt_tokens: int, completion: int, param: str = "messages") -> UserError:
    return UserError(
        f"This model's maximum context length is {engine.context} tokens. However, you requested "
        f"{prompt_tokens + completion} tokens ({prompt_tokens} in the prompt, {completion} for the completion). "
        "Please reduce the length of the prompt or the max_tokens.", param=param, code="context_length_exceeded",
    )


def check_penalties(frequency: float | None, presence: float | None) -> None:
    for name, value in (("frequency_penalty", frequency), ("presence_penalty", presence)):
        if value:
            raise UserError(f"{name} is not supported by this server yet: omit it or set it to 0", param=name,
                            code="unsupported_parameter")


def run(engine: Engine, prompts: list[list[int]], params: list[Params], adapter, constraints: list,
        http: HttpRequest | None = None) -> AsyncIterator[tuple[int, Delta]]:
    """Submit one engine request per prompt now (an engine that refuses, its queue full or the model unloaded,
    is a 429 before any response has started, streamed or not), and return the (index, delta) stream, which
    runs until all finish.

    Leaving the loop early (the consumer stopped), or the client going away (streamed or not: a task waits
    on the connection's disconnect), cancels what is still running.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    handles = []
    try:
        for i, (ids, p, c) in enumerate(zip(prompts, params, constraints)):
            def on_output(delta: Delta, i=i) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (i, delta))

            handles.append(engine.submit(Request(ids, p, on_output, adapter=adapter, constraint=c)))
    except BaseException:
        for h in handles:
            h.cancel()
        raise
    return _deltas(queue, handles, http)


async def _deltas(queue: asyncio.Queue, handles: list, http: HttpRequest | None) -> AsyncIterator[tuple[int, Delta]]:
    gone = asyncio.ensure_future(_disconnect(http)) if http is not None else None
    try:
        open_ = len(handles)
        while open_:
            if gone is not None and gone.done():
                return
            try:
                i, delta = queue.get_nowait()
            except asyncio.QueueEmpty:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter} if gone is None else {getter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return
                i, delta = getter.result()
            if delta.finish_reason == "error":
                raise RuntimeError(f"generation failed: {delta.error}")
            if delta.finish_reason == "cancelled":  # not by us: the engine was closed under the request
                raise RateLimited("The model was unloaded while this request ran; retry.", retry_after=1,
                                  code="server_overloaded")
            if delta.finish_reason:
                open_ -= 1
            yield i, delta
    finally:
        for h in handles:
            h.cancel()
        if gone is not None:
            gone.cancel()


async def _disconnect(http: HttpRequest) -> None:
    """Returns when the client has gone away (the request's body was read already: what comes next is that)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass
