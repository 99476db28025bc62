"""One captured call, as the SDK wrapper and the proxy both report it, and streams put back together.

A record is a plain JSON object:
`{id, source, model, request, response, status, error, started_at, latency_ms, ttft_ms, stream, tags}`.
`id` is made by whoever captured the call, so delivering a record twice stores it once. `response` is a
`chat.completion` object (a stream is reassembled into one); `status` is the HTTP status (None when no
response came back); `error` is `{type, message}` or the provider's error body.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

TRANSPORT_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")


def new_id() -> str:
    return "log-" + uuid.uuid4().hex


def json_safe(value: Any) -> Any:
    """Plain JSON from SDK arguments: pydantic models dumped, sentinels (NOT_GIVEN, Omit) dropped."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items() if not _sentinel(v)}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value if not _sentinel(v)]
    if isinstance(value, type) and hasattr(value, "model_json_schema"):  # response_format=SomeModel in .parse()
        return {"type": "json_schema", "json_schema": {"name": value.__name__, "schema": value.model_json_schema()}}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    return str(value)


def _sentinel(value: Any) -> bool:
    return type(value).__name__ in ("NotGiven", "Omit")


def request_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the SDK sends for these `create(...)` arguments."""
    body = {k: v for k, v in kwargs.items() if k not in TRANSPORT_OPTIONS}
    extra = kwargs.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return json_safe(body)


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of a server-sent-events body (`data: {...}` lines), `[DONE]` and junk skipped."""
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                try:
                    item = json.loads(data)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    out.append(item)
    return out


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`chat.completion.chunk` objects -> the one `chat.completion` they spell, as if not streamed."""
    if not chunks:
        return None
    first = chunks[0]
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for c in chunk.get("choices") or []:
            _merge_choice(choices.setdefault(c.get("index", 0), _empty_choice(c.get("index", 0))), c)
    for choice in choices.values():
        calls = choice["message"].pop("_calls")
        if calls:
            choice["message"]["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
        "model": first.get("model"), "system_fingerprint": first.get("system_fingerprint"),
        "choices": [choices[i] for i in sorted(choices)], "usage": usage,
    }


def _empty_choice(index: int) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": None, "_calls": {}},
            "finish_reason": None, "logprobs": None}


def _merge_choice(choice: dict[str, Any], chunk_choice: dict[str, Any]) -> None:
    delta = chunk_choice.get("delta") or {}
    message = choice["message"]
    if delta.get("role"):
        message["role"] = delta["role"]
    if delta.get("content") is not None:
        message["content"] = (message["content"] or "") + delta["content"]
    if delta.get("refusal") is not None:
        message["refusal"] = message.get("refusal", "") + delta["refusal"]
    for call in delta.get("tool_calls") or []:
        slot = message["_calls"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                    "function": {"name": "", "arguments": ""}})
        slot["id"] = call.get("id") or slot["id"]
        fn = call.get("function") or {}
        slot["function"]["name"] += fn.get("name") or ""
        slot["function"]["arguments"] += fn.get("arguments") or ""
    if chunk_choice.get("finish_reason"):
        choice["finish_reason"] = chunk_choice["finish_reason"]
    logprobs = chunk_choice.get("logprobs")
    if logprobs and logprobs.get("content"):
        choice["logprobs"] = choice["logprobs"] or {"content": []}
        choice["logprobs"]["content"] += logprobs["content"]


def usage_of(response: dict[str, Any] | None) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) of a response; None when it reports no usage (a stream without
    `stream_options.include_usage`, an error)."""
    usage = (response or {}).get("usage")
    if not usage:
        return None
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


ASSISTANT_FIELDS = ("role", "content", "tool_calls", "refusal")


def example(request: dict[str, Any], response: dict[str, Any] | None) -> dict[str, Any] | None:
    """A call as an OpenAI fine-tuning example: the request's messages (and tools) + the first reply.
    None when the call has no usable reply (an error, an empty or refused answer)."""
    messages = request.get("messages")
    choices = (response or {}).get("choices") or []
    if not isinstance(messages, list) or not messages or not choices:
        return None
    reply = {k: v for k, v in (choices[0].get("message") or {}).items() if k in ASSISTANT_FIELDS and v}
    reply.pop("refusal", None)
    if not reply.get("content") and not reply.get("tool_calls"):
        return None
    reply = {"role": "assistant", **{k: v for k, v in reply.items() if k != "role"}}
    out: dict[str, Any] = {"messages": [*messages, reply]}
    if request.get("tools"):
        out["tools"] = request["tools"]
    return out
