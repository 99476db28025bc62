"""Tool calls in a model's output: the text the bundled models write, read back as OpenAI `tool_calls`.

`data/render.py` writes a call into the assistant text, for chat templates without tool support, as a
Hermes-style block: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`; some models put a JSON
list of calls inside the tags instead (SmolLM2's own data does). `ToolCallParser` reads both, incrementally,
so a streamed reply and a whole one come out the same: content is the text outside the blocks (surrounding
whitespace dropped), each well-formed block naming one of the request's tools becomes calls, and anything
else (malformed JSON, an unknown name) stays text. While streaming, a tail that may be the start of
`<tool_call>` is held back until it is known not to be.

`ToolPlan` is what a request's `tools`, `tool_choice` and `parallel_tool_calls` mean for one generation:
which tools the prompt lists, which names are parsed, and, where a call is required, the JSON schema the
output is constrained to after an opening `<tool_call>\\n` put at the end of the prompt (as vLLM does).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as a string (as OpenAI sends it)

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for generation.

    tools: listed in the prompt (None: no tools, or tool_choice "none"); names: the calls parsed from the
    output (empty: no parsing); forced: "required" or a function name (the output is one constrained call);
    parallel: False returns at most one call and stops the model after the first.
    """

    tools: list[dict] | None = None
    names: frozenset[str] = frozenset()
    forced: str | None = None
    parallel: bool = True

    @property
    def prefix(self) -> str:
        """Text put after the generation prompt: the opening of the call the output must be."""
        return OPEN + "\n" if self.forced else ""

    def stops(self) -> list[str]:
        """Extra stop strings: one call only stops at its closing tag."""
        return [CLOSE] if self.names and not self.parallel and not self.forced else []

    def schema(self) -> dict | None:
        """The JSON schema a forced call is constrained to; None when nothing is forced."""
        if not self.forced:
            return None
        fns = [t["function"] for t in self.tools or []]
        if self.forced != "required":
            fns = [f for f in fns if f["name"] == self.forced]
        options = [_call_schema(f) for f in fns]
        return options[0] if len(options) == 1 else {"anyOf": options}

    def parser(self) -> ToolCallParser:
        """A parser for one reply (generated after `prefix`)."""
        parser = ToolCallParser(self.names, single=not self.parallel or bool(self.forced))
        parser.feed(self.prefix)
        return parser

    def read(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """A whole reply as (content, calls)."""
        return _read(self.parser(), text)


def plan(tools: list[dict] | None, tool_choice: str | None, parallel: bool | None) -> ToolPlan:
    """The plan for validated request fields; tool_choice is "none", "auto", "required", a function name or
    None (auto when tools are given)."""
    if not tools or tool_choice == "none":
        return ToolPlan()
    names = frozenset(t["function"]["name"] for t in tools)
    forced = tool_choice if tool_choice not in (None, "auto") else None
    return ToolPlan(tools=tools, names=names, forced=forced, parallel=parallel is not False)


def _call_schema(fn: dict) -> dict:
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if "type" not in params:
        params = {**params, "type": "object"}
    return {"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


@dataclass
class Text:
    text: str


Event = Text | ToolCall


@dataclass
class ToolCallParser:
    """Feed a reply's text as it comes; get back content text and tool calls as soon as each is certain."""

    names: frozenset[str]
    single: bool = False
    calls: list[ToolCall] = field(default_factory=list)
    _buffer: str = ""
    _in_call: bool = False
    _started: bool = False  # some content has been emitted (leading whitespace is dropped)
    _space: str = ""  # trailing whitespace held back: sent only if more text follows

    def feed(self, text: str) -> list[Event]:
        self._buffer += text
        out: list[Event] = []
        while True:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return out
                block, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE):]
                self._in_call = False
                out += self._block(block, closed=True)
            else:
                start = self._buffer.find(OPEN)
                if start < 0:
                    keep = _partial_tail(self._buffer, OPEN)
                    cut = len(self._buffer) - keep
                    out += self._text(self._buffer[:cut])
                    self._buffer = self._buffer[cut:]
                    return out
                out += self._text(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN):]
                self._in_call = True

    def finish(self) -> list[Event]:
        """The rest, at the end of the reply: an unclosed block still counts if its JSON is complete (the
        model stopped at `</tool_call>`, or a constrained call ended)."""
        rest, self._buffer = self._buffer, ""
        return self._block(rest, closed=False) if self._in_call else self._text(rest)

    def _text(self, text: str) -> list[Event]:
        if not self._started:
            text = text.lstrip()
        text = self._space + text
        body = text.rstrip()
        self._space = text[len(body):]
        if not body:
            return []
        self._started = True
        return [Text(body)]

    def _block(self, block: str, closed: bool) -> list[Event]:
        calls = parse_block(block, self.names)
        if calls is None:
            return self._text(OPEN + block + (CLOSE if closed else ""))
        if self.single:
            calls = calls[: max(0, 1 - len(self.calls))]
        self.calls += calls
        return list(calls)


def parse_block(block: str, names: frozenset[str]) -> list[ToolCall] | None:
    """The calls in one block's JSON (an object or a list of them); None when it is not a well-formed call
    of a known tool."""
    try:
        value = json.loads(block)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in names:
            return None
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append(ToolCall(new_call_id(), item["name"], json.dumps(args, ensure_ascii=False)))
    return calls or None


def parse(text: str, names: frozenset[str], *, single: bool = False) -> tuple[str | None, list[ToolCall]]:
    """A whole reply as (content, calls); content is None when only calls remain."""
    return _read(ToolCallParser(names, single=single), text)


def message(text: str, tools: list[dict] | None) -> dict:
    """A generated reply as an OpenAI assistant message: with `tools` offered, its calls in `tool_calls` (what
    the server returns; in-process answerers use this so that evals see the same)."""
    names = frozenset(t.get("function", {}).get("name") for t in tools or [] if isinstance(t, dict))
    if not names:
        return {"role": "assistant", "content": text}
    content, calls = parse(text, names)
    out: dict = {"role": "assistant", "content": content}
    if calls:
        out["tool_calls"] = [c.to_openai() for c in calls]
    return out


def _read(parser: ToolCallParser, text: str) -> tuple[str | None, list[ToolCall]]:
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Text))
    return content or None, parser.calls


def _partial_tail(text: str, marker: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
