"""What a model answered, and what a test row asks for: the two things every grader compares.

A model's answer is text, tool calls, or both (an OpenAI assistant message), and answer columns in a file may
hold either a plain string or such a message. `Output` carries both forms the same way, so graders, the judge,
the output cache and the report never care where an answer came from. `prompt_of` / `reference_of` split a
chat row into what is asked (every message before the final assistant turn, plus the row's tools) and the
reference answer (that final turn), the way fine-tuning rows are written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tuneforge.evals.exact import normalize


@dataclass
class Output:
    """One answer: its text, its tool calls (OpenAI's shape, `arguments` a JSON string), or why there is none.

    `error` is set when the model could not answer this prompt (a request the upstream refused): such an
    answer has empty text and scores as a wrong answer.
    """

    text: str = ""
    tool_calls: list[dict] | None = None
    error: str | None = None

    @classmethod
    def of(cls, value: Any) -> Output:
        """An Output from a string, an assistant message dict, a stored `to_dict()`, or an Output."""
        if isinstance(value, Output):
            return value
        if value is None:
            return cls("")
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            text = value.get("text", value.get("content"))
            return cls(_text(text), _tool_calls(value.get("tool_calls")), value.get("error"))
        raise TypeError(f"an answer must be a string or an assistant message, got {type(value).__name__}")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"text": self.text}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.error:
            out["error"] = self.error
        return out

    def shown(self) -> str:
        """The answer as one text, for a judge prompt or a report: the text, then each tool call as JSON."""
        parts = [self.text] if self.text else []
        for call in self.tool_calls or []:
            fn = call.get("function") or {}
            parts.append(f"[tool call] {fn.get('name')}({fn.get('arguments') or ''})")
        return "\n".join(parts)

    def canonical(self) -> str:
        """A form in which two answers that say the same thing are equal (exact's normalisation; tool-call ids,
        argument key order and spacing ignored)."""
        return json.dumps([normalize(self.text), self.calls()], sort_keys=True)

    def calls(self) -> list[list]:
        """The tool calls as [name, arguments parsed as JSON (or normalised text)], ids and spacing dropped."""
        return [[(c.get("function") or {}).get("name"), _parsed_or_text((c.get("function") or {}).get("arguments"))]
                for c in self.tool_calls or []]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _tool_calls(calls: Any) -> list[dict] | None:
    if not calls:
        return None
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        if not isinstance(args, str):
            args = json.dumps(args if args is not None else {})
        out.append({"type": "function", "function": {"name": fn.get("name"), "arguments": args}})
    return out or None


def _parsed_or_text(args: Any) -> Any:
    try:
        return json.loads(args) if isinstance(args, str) else args
    except ValueError:
        return normalize(args)


def prompt_of(row: dict) -> dict:
    """What the model is asked: `{"messages": [...before the final assistant turn], "tools"?: [...]}`."""
    messages = row.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    prompt: dict[str, Any] = {"messages": messages}
    if row.get("tools"):
        prompt["tools"] = row["tools"]
    return prompt


def reference_of(row: dict) -> Output | None:
    """The row's reference answer (its final assistant message), or None when the row ends elsewhere."""
    messages = row.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        return Output.of(messages[-1])
    return None


def prompt_key(prompt: dict) -> str:
    """A stable id of a prompt (sha256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
