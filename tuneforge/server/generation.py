"""Between the HTTP routes and an engine: model lookup, token budgets, and engine outputs as async streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request as HttpRequest
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import UserError
from tuneforge.inference.engine import Delta, Engine, Params, Request
from tuneforge.server.deps import State
from tuneforge.store import models


@dataclass
class Loaded:
    engine: Engine
    target: models.Weights


async def load(state: State, model: str, project_id: str) -> Loaded:
    """The engine and adapter for a model name (first use loads the base model: seconds)."""
    target = await run_in_threadpool(models.resolve, state.db, model, project_id)
    engine = await run_in_threadpool(state.engines.get, target.base)
    return Loaded(engine, target)


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


def _too_long(engine: Engine, prompt_tokens: int, completion: int) -> UserError:
    return UserError(
        f"This model's maximum context length is {engine.context} tokens. However, you requested "
        f"{prompt_tokens + completion} tokens ({prompt_tokens} in the prompt, {completion} for the completion). "
        "Please reduce the length of the prompt or the max_tokens.", param="messages", code="context_length_exceeded",
    )


def check_penalties(frequency: float | None, presence: float | None) -> None:
    for name, value in (("frequency_penalty", frequency), ("presence_penalty", presence)):
        if value:
            raise UserError(f"{name} is not supported by this server yet: omit it or set it to 0", param=name,
                            code="unsupported_parameter")


async def run(engine: Engine, prompts: list[list[int]], params: list[Params], adapter, constraints: list,
              http: HttpRequest | None = None) -> AsyncIterator[tuple[int, Delta]]:
    """Submit one engine request per prompt and yield (index, delta) as they come, until all finish.

    Leaving the loop early (the client went away, or the consumer stopped) cancels what is still running.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    handles = []
    for i, (ids, p, c) in enumerate(zip(prompts, params, constraints)):
        def on_output(delta: Delta, i=i) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (i, delta))

        handles.append(engine.submit(Request(ids, p, on_output, adapter=adapter, constraint=c)))
    open_ = len(handles)
    try:
        while open_:
            try:
                i, delta = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                if http is not None and await http.is_disconnected():
                    return
                continue
            if delta.finish_reason == "error":
                raise RuntimeError(f"generation failed: {delta.error}")
            if delta.finish_reason:
                open_ -= 1
            yield i, delta
    finally:
        for h in handles:
            h.cancel()
