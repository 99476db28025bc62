"""A scripted judge: an OpenAI-compatible /v1/chat/completions on 127.0.0.1 (FastAPI on uvicorn, in a thread),
for the eval tests. It reads the judge prompt the way a model would see it and answers by a fixed rule picked
by the model name:

  first      always prefers the answer shown first (a maximally position-biased judge)
  marker     prefers the answer containing GOOD; a tie when both or neither do (an unbiased judge)
  garbage    replies with text no parser can read
  flaky      503 (Retry-After: 0) on the first attempt at each request, then answers like `marker`
  strict     refuses response_format with HTTP 400, otherwise answers like `marker` (in a code fence)
  criterion  PASS when the judged answer contains GOOD, else FAIL
  deny       HTTP 401 (a bad key)
  json       prefers the answer that is a JSON object; a tie when both or neither are
  NAME+slow  judge NAME, answering after 0.2 s
  echo       not a judge: answers with the last user message, upper-cased (HTTP 400 if it contains REFUSE);
             streamed a word at a time when asked

    with FakeJudge() as judge:
        client = OpenAIChatClient(judge.url, "key", "first")
        ...
        judge.calls  # every request body received
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from live_server import free_port

SLOW = "+slow"


def _section(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.DOTALL)
    return match.group(1) if match else ""


def verdict(model: str, prompt: str) -> str:
    """The reply text of the scripted judge `model` to a judge prompt."""
    if model == "garbage":
        return "I think both are lovely, honestly, hard to say!!"
    if model == "criterion":
        answer = _section(prompt, "[The answer]", "[End of the answer]")
        return json.dumps({"explanation": "looked for GOOD", "verdict": "PASS" if "GOOD" in answer else "FAIL"})
    a, b = _section(prompt, "[Answer A]", "[End of answer A]"), _section(prompt, "[Answer B]", "[End of answer B]")
    if model == "first":
        return json.dumps({"explanation": "The first answer is better.", "winner": "A"})
    if model == "json":
        ok_a, ok_b = _is_object(a), _is_object(b)
        winner = "A" if ok_a and not ok_b else "B" if ok_b and not ok_a else "tie"
        return json.dumps({"explanation": "the one that is a JSON object", "winner": winner})
    good_a, good_b = "GOOD" in a, "GOOD" in b
    winner = "A" if good_a and not good_b else "B" if good_b and not good_a else "tie"
    reply = json.dumps({"explanation": f"{winner} has the marker" if winner != "tie" else "same", "winner": winner})
    return f"```json\n{reply}\n```" if model == "strict" else reply


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def make_app(calls: list[dict], attempts: dict[str, int]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        calls.append(body)
        model = body["model"]
        if model.endswith(SLOW):  # the same judge, answering after a pause (to be interrupted mid-run)
            model = model.removesuffix(SLOW)
            await asyncio.sleep(0.2)
        prompt = "\n".join(m.get("content") or "" for m in body["messages"])
        if model == "flaky":
            key = json.dumps(body["messages"], sort_keys=True)
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] == 1:
                return JSONResponse({"error": {"message": "busy", "type": "server_error"}}, status_code=503,
                                    headers={"retry-after": "0"})
        if model == "deny":
            return JSONResponse({"error": {"message": "Incorrect API key", "type": "invalid_request_error"}},
                                status_code=401)
        if model == "echo":
            question = body["messages"][-1]["content"]
            if "REFUSE" in question:
                return JSONResponse({"error": {"message": "content filtered", "type": "invalid_request_error"}},
                                    status_code=400)
            if body.get("stream"):
                return _stream(model, question.upper(), usage=bool((body.get("stream_options") or {})
                                                                   .get("include_usage")))
            return _completion(model, question.upper())
        if model == "strict" and "response_format" in body:
            return JSONResponse({"error": {"message": "response_format is not supported", "type":
                                           "invalid_request_error"}}, status_code=400)
        return _completion(model, verdict("marker" if model == "flaky" else model, prompt))

    return app


def _completion(model: str, content: str) -> dict:
    return {"id": "chatcmpl-judge", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _stream(model: str, content: str, usage: bool) -> StreamingResponse:
    """The reply as OpenAI's server-sent chunks, a word at a time."""

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
        body = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": choices, **({"usage": usage} if usage else {})}
        return f"data: {json.dumps(body)}\n\n"

    def events():
        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(content.split(" ")):
            yield chunk({"content": (" " if i else "") + word})
        yield chunk({}, "stop")
        if usage:
            words = len(content.split())
            yield chunk({}, usage={"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


class FakeJudge:
    """The scripted judge served on a free port for the duration of a `with` block."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(make_app(self.calls, self.attempts), host="127.0.0.1", port=self.port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeJudge:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise AssertionError("the fake judge did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
