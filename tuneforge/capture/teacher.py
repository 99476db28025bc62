"""Asking a teacher model (any OpenAI-compatible upstream) for answers: many at once under a concurrency
limit, each retried with exponential backoff on 429, 5xx, timeouts and dropped connections (Retry-After is
honoured). Used by relabel jobs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tuneforge.capture.forward import scrub_text
from tuneforge.capture.upstreams import Upstream

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class Question:
    key: Any
    messages: list[dict[str, Any]]
    tools: list[Any] | None = None


class TeacherError(Exception):
    pass


def _shown(text: str, authorization: str | None) -> str:
    """An upstream's reply as a job may show it: short, and without any piece of the operator's key (an upstream
    may quote the key it was sent: "Incorrect API key provided: sk-abc***wxyz")."""
    key = authorization[7:] if authorization and authorization.lower().startswith("bearer ") else authorization
    return scrub_text(text[:300], key)


async def ask(client: httpx.AsyncClient, upstream: Upstream, model: str, q: Question, *, max_attempts: int = 5,
              base_delay: float = 0.5, params: dict | None = None) -> tuple[dict[str, Any], str]:
    """(the assistant message, the model that wrote it, as the upstream names it)."""
    body: dict[str, Any] = {"model": model, "messages": q.messages, **(params or {})}
    if q.tools:
        body["tools"] = q.tools
    headers = {"authorization": auth} if (auth := upstream.authorization()) else {}
    last = ""
    for attempt in range(max_attempts):
        try:
            r = await client.post(upstream.endpoint("chat/completions"), json=body, headers=headers)
        except httpx.HTTPError as exc:
            last, retry_after = f"{type(exc).__name__}: {exc}", None
        else:
            retry_after = _seconds(r.headers.get("retry-after"))
            if r.status_code < 300:
                try:
                    data = r.json()
                    message = {k: v for k, v in data["choices"][0]["message"].items()
                               if k in ("role", "content", "tool_calls") and v}
                    return {**message, "role": "assistant"}, data.get("model") or model
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    last = f"HTTP {r.status_code} but not a chat completion: {_shown(r.text, auth)}"
            else:
                last = f"HTTP {r.status_code}: {_shown(r.text, auth)}"
                if r.status_code not in RETRY_STATUS:
                    raise TeacherError(last)
        if attempt + 1 < max_attempts:
            delay = retry_after if retry_after is not None else base_delay * 2**attempt * (0.5 + random.random())
            await asyncio.sleep(min(delay, 60.0))
    raise TeacherError(f"gave up after {max_attempts} attempts: {last}")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


async def ask_all(questions: list[Question], upstream: Upstream, model: str, *, concurrency: int = 8,
                  max_attempts: int = 5, timeout: float = 120.0, base_delay: float = 0.5,
                  on_answer: Callable[[Question, dict, str], None],
                  on_error: Callable[[Question, str], None]) -> None:
    """Every question answered (or failed for good), at most `concurrency` in flight at once."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def one(q: Question) -> None:
            async with gate:
                try:
                    message, by = await ask(client, upstream, model, q, max_attempts=max_attempts,
                                            base_delay=base_delay)
                except TeacherError as exc:
                    on_error(q, str(exc))
                    return
                on_answer(q, message, by)

        await asyncio.gather(*(one(q) for q in questions))
