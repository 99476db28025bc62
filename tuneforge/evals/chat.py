"""The one way evals talk to a chat model: judges, criterion checks and upstream candidates all go through here.

A `ChatClient` is anything with a `model` name and `complete(messages, max_tokens=, temperature=) -> str`.
Two come with the core:

- `OpenAIChatClient`: any OpenAI-compatible endpoint (an upstream such as GPT-4o through the configured
  upstreams and their keys, or a model this platform serves at its own /v1) via the official `openai` SDK,
  synchronous, with its own retry loop (the SDK's is switched off): 429, 408/409, 5xx, timeouts and dropped
  connections are retried with exponential backoff and jitter, honouring Retry-After, as
  `capture/teacher.py` does. A server that refuses `response_format` (HTTP 400) is asked again without it,
  and not offered it again.
- `LocalChatClient`: an in-process `tuneforge.inference.generate.Generator`; calls made at once from
  several threads are answered as one generation batch.

Error messages name the model, never the upstream's address: they reach tenants' reports.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

from tuneforge.capture.forward import scrub_text
from tuneforge.capture.teacher import RETRY_STATUS
from tuneforge.capture.upstreams import Upstreams, from_env
from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.inference import tool_calls


class ChatError(TuneforgeError):
    """A chat call that failed for good: a refused request, or too many failed attempts."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message, code="chat_call_failed")
        self.status = status


@runtime_checkable
class ChatClient(Protocol):
    """What a judge needs from a model."""

    model: str

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 response_format: dict | None = None) -> str:
        """The text of the model's reply to `messages` (response_format is a hint a client may ignore)."""
        ...


class OpenAIChatClient:
    """An OpenAI-compatible chat endpoint, called synchronously with retries (thread-safe)."""

    def __init__(self, base_url: str, api_key: str | None, model: str, *, max_attempts: int = 5,
                 timeout: float = 120.0, base_delay: float = 0.5, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.model, self.base_url = model, base_url
        self.max_attempts, self.base_delay, self._sleep = max_attempts, base_delay, sleep
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout)
        self._key = api_key
        self._response_format_ok = True

    @classmethod
    def from_upstreams(cls, model: str, upstreams: Upstreams | None = None, **kwargs: Any) -> OpenAIChatClient:
        """A client for `model` through the configured upstreams ($TUNEFORGE_UPSTREAM_URL / $TUNEFORGE_UPSTREAMS)."""
        upstream = (upstreams if upstreams is not None else from_env()).find(model)
        if upstream is None:
            raise ConfigError(f"no upstream serves model '{model}': set TUNEFORGE_UPSTREAM_URL (and "
                              "TUNEFORGE_UPSTREAM_API_KEY) or add a route for it to the TUNEFORGE_UPSTREAMS file")
        key = os.environ.get(upstream.api_key_env) if upstream.api_key_env else None
        return cls(upstream.url, key, model, **kwargs)

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 response_format: dict | None = None) -> str:
        message = self.respond(messages, max_tokens=max_tokens, temperature=temperature,
                               response_format=response_format)
        return message.get("content") or ""

    def respond(self, messages: list[dict], *, tools: list[dict] | None = None, max_tokens: int,
                temperature: float, top_p: float | None = None, seed: int | None = None,
                response_format: dict | None = None) -> dict:
        """The assistant message (role, content, tool_calls) the model replies with."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature}
        body |= {k: v for k, v in (("tools", tools), ("top_p", top_p), ("seed", seed)) if v is not None}
        if response_format is not None and self._response_format_ok:
            body["response_format"] = response_format
        try:
            completion = self._call(body)
        except ChatError as exc:
            if exc.status != 400 or "response_format" not in body:
                raise
            self._response_format_ok = False  # this server does not take it: ask plainly from now on
            completion = self._call({k: v for k, v in body.items() if k != "response_format"})
        message = completion.choices[0].message.model_dump(exclude_none=True)
        return {k: v for k, v in message.items() if k in ("role", "content", "tool_calls")} | {"role": "assistant"}

    def _call(self, body: dict) -> Any:
        import openai

        last = ""
        for attempt in range(self.max_attempts):
            retry_after = None
            try:
                completion = self._client.chat.completions.create(**body)
                if not completion.choices:
                    raise ChatError(f"{self._where()}: a reply with no choices")
                return completion
            except openai.APIStatusError as exc:
                last = f"HTTP {exc.status_code}: {scrub_text(_short(exc), self._key)}"  # no piece of the key
                if exc.status_code not in RETRY_STATUS:
                    raise ChatError(f"{self._where()}: {last}", status=exc.status_code) from None
                retry_after = _seconds(exc.response.headers.get("retry-after"))
            except openai.APIConnectionError as exc:  # includes timeouts
                last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.max_attempts:
                backoff = self.base_delay * 2**attempt * (0.5 + random.random())
                self._sleep(min(retry_after if retry_after is not None else backoff, 60.0))
        raise ChatError(f"{self._where()}: gave up after {self.max_attempts} attempts: {last}")

    def _where(self) -> str:
        return f"model '{self.model}' (upstream)"  # not the URL: messages end up in tenants' reports


class LocalChatClient:
    """A model loaded in this process (`tuneforge.inference.generate.Generator`). Calls from several threads
    (a judge's concurrency) are gathered into one generation batch: a batch of 8 costs little more time per
    step than one answer on a CPU, so eight verdicts come for not much more than the price of one.

    One background thread serves the queue while there is work and exits after `idle_s` with none; whether
    it exits and whether a call starts a new one are both decided under one lock, so no call is left waiting.
    """

    def __init__(self, generator: Any, model: str, *, max_batch: int = 8, gather_s: float = 0.05,
                 idle_s: float = 1.0):
        self.generator, self.model = generator, model
        self.max_batch, self.gather_s, self.idle_s = max_batch, gather_s, idle_s
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # None exactly when no thread serves the queue

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 response_format: dict | None = None) -> str:
        return self.respond(messages, max_tokens=max_tokens, temperature=temperature)["content"]

    def respond(self, messages: list[dict], *, tools: list[dict] | None = None, max_tokens: int,
                temperature: float, top_p: float | None = None, seed: int | None = None,
                response_format: dict | None = None) -> dict:
        from tuneforge.inference.generate import Prompt, SamplingParams

        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p or 1.0, seed=seed)
        done: Future = Future()
        with self._lock:
            self._queue.put((Prompt(messages, tools), params, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True, name=f"local-chat-{self.model}")
                self._thread.start()
        return tool_calls.message(done.result(), tools)

    def _serve(self) -> None:
        """Take what is waiting (up to max_batch, gathering for a moment), answer it as batches of equal
        sampling settings, repeat; exit when nothing came for idle_s (respond then starts a new one)."""
        while True:
            try:
                batch = [self._queue.get(timeout=self.idle_s)]
            except queue.Empty:
                with self._lock:  # respond queues and checks _thread under this lock too: none is missed
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[str, list] = {}
            for item in batch:
                groups.setdefault(repr(item[1]), []).append(item)
            for items in groups.values():
                self._answer(items)

    def _answer(self, items: list) -> None:
        """Generate one batch of equal sampling settings; every caller gets a text or an exception."""
        futures = [done for _, _, done in items]
        try:
            texts = list(self.generator.complete([p for p, _, _ in items], items[0][1], batch_size=len(items)))
        except Exception as exc:  # every caller of the batch gets the error
            for done in futures:
                done.set_exception(exc)
            return
        for done, text in zip(futures, texts):
            done.set_result(text)
        for done in futures[len(texts):]:
            done.set_exception(ChatError(f"model '{self.model}' (local): the generator returned {len(texts)} "
                                         f"answers for {len(items)} prompts"))


def _short(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return str(exc)[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
