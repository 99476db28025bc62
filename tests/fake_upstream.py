"""A stand-in for a hosted provider (OpenAI-compatible /v1/chat/completions), for the capture tests and
bench/capture_overhead.py. Raw ASGI on uvicorn, so that it costs as little as possible next to what it
measures.

The model name picks the behaviour:
  anything else     answer after --latency-ms: the "teacher" below (key=value pairs -> JSON, else an echo)
  fail-401/429/500  that status with an OpenAI error body (429 with Retry-After: 0)
  flaky             503 on the first attempt at each conversation, then an answer
  slow              answers after 30 s (for timeouts)
  broken-stream     streams two chunks, then drops the connection
GET /seen returns the Authorization headers received (to check which key the proxy sent).

    python tests/fake_upstream.py --port 9000 --latency-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

import httpx
from live_server import free_port

LATENCY_S = float(os.environ.get("FAKE_UPSTREAM_LATENCY_MS", "0")) / 1000
SEEN: list[str] = []
ATTEMPTS: dict[str, int] = {}


def teach(messages: list[dict]) -> str:
    """The teacher's answer: `k=v; k=v` in the last user message -> a JSON object, else an echo."""
    text = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    pairs = [p.split("=", 1) for p in text.split(":", 1)[-1].split(";") if "=" in p]
    if pairs:
        return json.dumps({k.strip(): v.strip() for k, v in pairs}, separators=(", ", ": "))
    return f"echo: {text}"


def completion(model: str, content: str, prompt_tokens: int) -> dict:
    n = len(content.split())
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
    }


def chunks(model: str, content: str, prompt_tokens: int, usage: bool) -> list[dict]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    words = content.split(" ")
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{**base, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w},
                                  "finish_reason": None}]} for i, w in enumerate(words)]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        n = len(words)
        out.append({**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                      "total_tokens": prompt_tokens + n}})
    return out


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def error(status: int, message: str, type_: str, code: str) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] in ("/health", "/seen"):
        return await send_json(send, 200, {"seen": SEEN} if scope["path"] == "/seen" else {"ok": True})
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    req = json.loads(body)
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    if len(SEEN) < 10000:
        SEEN.append(auth)
    model, messages = req.get("model", ""), req.get("messages", [])
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    if model == "fail-401":
        return await send_json(send, 401, error(401, "Incorrect API key provided.", "invalid_request_error",
                                                "invalid_api_key"))
    if model == "fail-429":
        return await send_json(send, 429, error(429, "Rate limit reached.", "requests", "rate_limit_exceeded"),
                               [(b"retry-after", b"0"), (b"x-ratelimit-remaining-requests", b"0")])
    if model == "fail-500":
        return await send_json(send, 500, error(500, "The server had an error.", "server_error", None))
    if model == "flaky":
        key = hashlib.sha1(json.dumps(messages).encode()).hexdigest()
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        if ATTEMPTS[key] == 1:
            return await send_json(send, 503, error(503, "Overloaded, try again.", "server_error", None))
    await asyncio.sleep(30 if model == "slow" else LATENCY_S)
    content = teach(messages)
    if not req.get("stream"):
        return await send_json(send, 200, completion(model, content, prompt_tokens))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    for i, c in enumerate(chunks(model, content, prompt_tokens, include_usage)):
        if model == "broken-stream" and i == 2:
            raise ConnectionAbortedError("the fake upstream drops the stream on purpose")
        await send({"type": "http.response.body", "body": f"data: {json.dumps(c)}\n\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@contextlib.contextmanager
def running(latency_ms: float = 0.0):
    """The fake upstream in a subprocess; yields its /v1 URL."""
    port = free_port()
    env = {**os.environ, "FAKE_UPSTREAM_LATENCY_MS": str(latency_ms)}
    proc = subprocess.Popen([sys.executable, __file__, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the fake upstream did not start") from None
                time.sleep(0.1)
        yield url + "/v1"
    finally:
        proc.kill()  # it may hold a deliberately slow request open
        proc.wait(timeout=10)


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=None)
    args = parser.parse_args()
    if args.latency_ms is not None:
        LATENCY_S = args.latency_ms / 1000
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)
