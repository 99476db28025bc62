"""Validate OpenAI chat fine-tuning JSONL before any training starts.

Applies the checks OpenAI applies to the chat format
(https://platform.openai.com/docs/guides/fine-tuning) and reports every bad line,
one problem per line (the first one found), as ``FILE:LINE: field: what is wrong (what to do)``.
Field paths use JSON path form: ``messages[1].tool_calls[0].function.arguments``.

Token checks are injected (``count_tokens``), so this module needs no tokenizer:

    report = validate_file("train.jsonl", count_tokens=fn, context_length=4096, max_length=2048)
    raise_if_invalid(report)          # or keep only report.rows with --skip-invalid

The file is read line by line; line numbers are 1-based physical lines and blank lines are skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from tuneforge.errors import UserError

TOP_LEVEL_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")
ROLES = ("system", "developer", "user", "assistant", "tool")
LEGACY_ROLES = ("function",)
ALLOWED_KEYS = {
    "system": ("role", "content", "name"),
    "developer": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": ("role", "content", "name", "tool_calls", "function_call", "weight", "refusal"),
    "tool": ("role", "content", "tool_call_id"),
    "function": ("role", "content", "name"),
}
PART_ROLES = ("system", "developer", "user")  # roles whose content may be a list of text parts
FUNCTION_DEF_KEYS = ("name", "description", "parameters", "strict")
NO_ASSISTANT = "no assistant message to learn from"


@dataclass
class Problem:
    """One bad line: where, which field, and what is wrong (with what to do)."""

    line: int
    field: str
    message: str

    def format(self, path: str | Path) -> str:
        return f"{path}:{self.line}: {self.field}: {self.message}"


@dataclass
class Stats:
    """Counts over the file. Token fields stay None unless ``count_tokens`` was given.

    Percentiles use the nearest-rank method over the valid rows' token counts.
    ``billed_tokens`` = sum(min(tokens, max_length)) * epochs: OpenAI bills every token, every epoch.
    """

    examples: int = 0
    invalid: int = 0
    assistant_messages: int = 0
    truncated: int = 0
    epochs: int = 3
    tokens_min: int | None = None
    tokens_p50: int | None = None
    tokens_p90: int | None = None
    tokens_p99: int | None = None
    tokens_max: int | None = None
    tokens_mean: float | None = None
    billed_tokens: int | None = None


@dataclass
class ValidationReport:
    """What ``validate_file`` found: problems, the valid rows (line number, row), and stats."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    rows: list[tuple[int, dict]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    more_problems: int = 0  # found past `max_problems`, counted but not kept
    format: str = "chat"  # "chat", or "preference" (pairs for DPO: see data/preference.py)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format_problems(self) -> list[str]:
        return [p.format(self.path) for p in self.problems]


class _Bad(Exception):
    """Internal: the first problem found in a row."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _fail(path: str, message: str) -> NoReturn:
    raise _Bad(path, message)


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------------- public API


def validate_file(
    path: str | Path,
    *,
    count_tokens: Callable[[dict], int] | None = None,
    context_length: int | None = None,
    max_length: int | None = None,
    epochs: int = 3,
    prompts: bool = False,
    keep_rows: bool = True,
    max_problems: int | None = None,
    preferences: bool = False,
) -> ValidationReport:
    """Check every line of a chat fine-tuning JSONL file; never raises for bad content.

    Raises ``UserError`` only when the file cannot be read at all (missing, a directory).
    With ``prompts=True`` the rows are inputs to generate from: no assistant message is required, and extra
    top-level keys (ids, metadata) are allowed, since they are carried through to the output.
    A check that only needs the verdict (an upload: up to hundreds of MB) passes ``keep_rows=False`` and a
    ``max_problems``, so its memory does not grow with the file.
    With ``preferences=True`` a file whose first row is a preference pair (OpenAI's, or TRL's prompt/chosen/rejected)
    is checked as pairs (``report.format == "preference"``; rows kept in OpenAI's shape; tokens counted on the
    longer side); a chat row in it is a problem of its line, and so is a pair in a chat file.
    """
    from tuneforge.data import preference
    report = ValidationReport(path=str(path), stats=Stats(epochs=epochs))
    counts: list[int] = []
    seen = valid = 0
    decided = not preferences  # the first row that parses decides the file's format
    for lineno, raw in _read_lines(path):
        seen += 1
        try:
            row = _parse_line(raw, first=lineno == 1)
            if not decided:
                decided = True
                report.format = "chat" if preference.format_of(row) == "chat" else "preference"
            if report.format == "preference":
                if preference.format_of(row) == "chat":
                    _fail("input", 'a chat row in a preference file (write {"input": ..., "preferred_output": [...], '
                                   '"non_preferred_output": [...]})')
                row = preference.normalized(row)
                if count_tokens is not None:
                    counts.append(max(_check_tokens(count_tokens(side), context_length)
                                      for side in preference.sides(row)))
            else:
                if preferences and preference.format_of(row) != "chat":
                    _fail("messages", "a preference pair in a chat file (the first row decides the format: "
                                      "keep one format per file)")
                _check_row(row, prompts=prompts)
                if count_tokens is not None:
                    counts.append(_check_tokens(count_tokens(row), context_length))
        except _Bad as bad:
            if max_problems is not None and len(report.problems) >= max_problems:
                report.more_problems += 1
            else:
                report.problems.append(Problem(lineno, bad.field, bad.message))
            continue
        valid += 1
        if keep_rows:
            report.rows.append((lineno, row))
        messages = row["messages"] if report.format == "chat" else row["preferred_output"] + row["non_preferred_output"]
        report.stats.assistant_messages += sum(1 for m in messages if m["role"] == "assistant")
    if seen == 0:
        report.problems.append(Problem(1, "file", "no examples (add one JSON object per line)"))
    report.stats.examples = valid
    report.stats.invalid = seen - valid
    if count_tokens is not None:
        _token_stats(report.stats, counts, max_length, epochs)
    return report


def check_row(row: Any) -> tuple[str, str] | None:
    """The first problem in one parsed example as ``(field, message)``, or None if it is valid."""
    try:
        _check_row(row)
    except _Bad as bad:
        return bad.field, bad.message
    return None


def raise_if_invalid(report: ValidationReport) -> None:
    """Raise ``UserError`` listing every problem (one per line) when the report is not ok."""
    if report.ok:
        return
    lines = report.format_problems()
    if report.stats.invalid:
        total = report.stats.invalid + report.stats.examples
        lines.append(f"{report.stats.invalid} of {total} examples are invalid: fix them or pass --skip-invalid")
    raise UserError("\n".join(lines))


# ---------------------------------------------------------------------------- reading


def _read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Open eagerly (so a missing file fails at once), then yield (line number, raw bytes)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{path}: no such file (it is a directory; pass a .jsonl file)")
    try:
        handle = p.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (check the path)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _lines(handle)


def _lines(handle: Any) -> Iterator[tuple[int, bytes]]:
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if raw.strip():
                yield lineno, raw


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed in JSON")


def _parse_line(raw: bytes, *, first: bool = False) -> dict:
    """Decode and parse one line; the row must be a JSON object."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        _fail("json", f"not valid UTF-8 (byte 0x{byte:02x} at byte {exc.start + 1}; save the file as UTF-8)")
    try:
        row = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _fail("json", f"not valid JSON ({exc.msg} at column {exc.colno}; write one JSON object per line)")
    except ValueError as exc:
        _fail("json", f"not valid JSON ({exc}; write one JSON object per line)")
    if not isinstance(row, dict):
        _fail("json", f'a JSON {_kind(row)}, not an object (each line must be {{"messages": [...]}})')
    return row


# ---------------------------------------------------------------------------- row checks


def _check_row(row: Any, prompts: bool = False) -> None:
    """Raise ``_Bad`` at the first problem in one parsed example."""
    if not isinstance(row, dict):
        _fail("json", f'a JSON {_kind(row)}, not an object (each line must be {{"messages": [...]}})')
    for key in row:
        if key not in TOP_LEVEL_KEYS and not prompts:
            _fail(str(key), f"unknown key (allowed: {', '.join(TOP_LEVEL_KEYS)})")
    if "messages" not in row:
        _fail("messages", 'missing (add a "messages" list of chat turns)')
    messages = row["messages"]
    if not isinstance(messages, list):
        _fail("messages", f'must be a list, got {_kind(messages)} (use [{{"role": "user", "content": ...}}, ...])')
    if not messages:
        _fail("messages", "empty (add at least one user and one assistant message)")
    if "tools" in row:
        _check_tools(row["tools"])
    if "functions" in row:
        _check_functions(row["functions"])
    if "parallel_tool_calls" in row and not isinstance(row["parallel_tool_calls"], bool):
        _fail("parallel_tool_calls", f"must be true or false, got {_kind(row['parallel_tool_calls'])} (or remove it)")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    if not prompts:
        _check_learnable(messages)


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        _fail("tools", f'must be a list, got {_kind(tools)} (use [{{"type": "function", "function": {{...}}}}])')
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            _fail(where, f'must be an object, got {_kind(tool)} (use {{"type": "function", "function": {{...}}}})')
        for key in tool:
            if key not in ("type", "function"):
                _fail(f"{where}.{key}", "unknown key (allowed: type, function)")
        if tool.get("type") != "function":
            _fail(f"{where}.type", f'must be "function", got {json.dumps(tool.get("type"))} (only function tools)')
        if "function" not in tool:
            _fail(f"{where}.function", 'missing (add {"name": ..., "parameters": {...}})')
        _check_function_def(tool["function"], f"{where}.function")


def _check_functions(functions: Any) -> None:
    """Legacy ``functions``: a list of function definitions (prefer ``tools``)."""
    if not isinstance(functions, list):
        _fail("functions", f'must be a list, got {_kind(functions)} (use [{{"name": ..., "parameters": {{...}}}}])')
    for i, fn in enumerate(functions):
        _check_function_def(fn, f"functions[{i}]")


def _check_function_def(fn: Any, where: str) -> None:
    if not isinstance(fn, dict):
        _fail(where, f'must be an object, got {_kind(fn)} (use {{"name": ..., "parameters": {{...}}}})')
    for key in fn:
        if key not in FUNCTION_DEF_KEYS:
            _fail(f"{where}.{key}", f"unknown key (allowed: {', '.join(FUNCTION_DEF_KEYS)})")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        _fail(f"{where}.name", f"must be a non-empty string, got {_kind(name)} (name the function)")
    if "description" in fn and not isinstance(fn["description"], str):
        _fail(f"{where}.description", f"must be a string, got {_kind(fn['description'])} (or remove it)")
    if "parameters" in fn and not isinstance(fn["parameters"], dict):
        _fail(
            f"{where}.parameters",
            f'must be an object, got {_kind(fn["parameters"])} (use a JSON Schema like {{"type": "object", ...}})',
        )
    if "strict" in fn and not isinstance(fn["strict"], bool):
        _fail(f"{where}.strict", f"must be true or false, got {_kind(fn['strict'])} (or remove it)")


def _check_role(message: Any, where: str) -> str:
    if not isinstance(message, dict):
        _fail(where, f'must be an object, got {_kind(message)} (use {{"role": "user", "content": "..."}})')
    if "role" not in message:
        _fail(f"{where}.role", f"missing (use one of {', '.join(ROLES)})")
    role = message["role"]
    if role not in ROLES and role not in LEGACY_ROLES:
        _fail(f"{where}.role", f"unknown role {json.dumps(role)} (use one of {', '.join(ROLES)})")
    return role


def _check_message(message: Any, where: str) -> None:
    role = _check_role(message, where)
    allowed = ALLOWED_KEYS[role]
    for key in message:
        if key == "weight" and role != "assistant":
            _fail(f"{where}.weight", f"only assistant messages can have a weight, this is a {role} message (remove it)")
        if key not in allowed:
            article = "an" if role == "assistant" else "a"
            _fail(f"{where}.{key}", f"unknown key for {article} {role} message (allowed: {', '.join(allowed)})")
    if "name" in message and (not isinstance(message["name"], str) or not message["name"]):
        _fail(f"{where}.name", f"must be a non-empty string, got {_kind(message['name'])} (or remove it)")
    if "weight" in message:
        _check_weight(message["weight"], f"{where}.weight")
    if "tool_calls" in message:
        _check_tool_calls(message["tool_calls"], f"{where}.tool_calls")
    if "function_call" in message:
        _check_call_function(message["function_call"], f"{where}.function_call")
    _check_content(message, role, where)
    if "refusal" in message and not isinstance(message["refusal"], (str, type(None))):
        _fail(f"{where}.refusal", f"must be a string or null, got {_kind(message['refusal'])} (or remove it)")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            what = "missing" if call_id is None else f"must be a non-empty string, got {_kind(call_id)}"
            _fail(f"{where}.tool_call_id", f"{what} (set it to the id of the tool call this answers)")


def _check_weight(weight: Any, where: str) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
        _fail(where, f"must be 0 or 1, got {json.dumps(weight)} (1 = learn from this reply, 0 = skip it)")


def _check_content(message: dict, role: str, where: str) -> None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        hint = "add the reply text, or tool_calls" if role == "assistant" else f"add the {role} message text"
        _fail(f"{where}.content", f"missing ({hint})")
    if isinstance(content, str):
        return
    if isinstance(content, list) and role in PART_ROLES:
        _check_parts(content, f"{where}.content")
        return
    extra = " or a list of text parts" if role in PART_ROLES else ""
    _fail(f"{where}.content", f"must be a string{extra}, got {_kind(content)} (put the message text in a string)")


def _check_parts(parts: list, where: str) -> None:
    if not parts:
        _fail(where, 'empty (add a text part {"type": "text", "text": "..."} or use a string)')
    for j, part in enumerate(parts):
        here = f"{where}[{j}]"
        if not isinstance(part, dict):
            _fail(here, f'must be an object, got {_kind(part)} (use {{"type": "text", "text": "..."}})')
        kind = part.get("type")
        if kind in ("image_url", "image", "input_image"):
            _fail(here, "images are not supported by text models (remove the image part)")
        if kind != "text":
            _fail(f"{here}.type", f'unsupported content part type {json.dumps(kind)} (use "text")')
        for key in part:
            if key not in ("type", "text"):
                _fail(f"{here}.{key}", "unknown key for a text part (allowed: type, text)")
        if not isinstance(part.get("text"), str):
            _fail(f"{here}.text", f"must be a string, got {_kind(part.get('text'))} (put the text here)")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        _fail(
            where, f'must be a list, got {_kind(calls)} (use [{{"id": ..., "type": "function", "function": {{...}}}}])'
        )
    if not calls:
        _fail(where, "empty (add a tool call or remove tool_calls)")
    for k, call in enumerate(calls):
        here = f"{where}[{k}]"
        if not isinstance(call, dict):
            _fail(
                here,
                f'must be an object, got {_kind(call)} (use {{"id": ..., "type": "function", "function": {{...}}}})',
            )
        for key in call:
            if key not in ("id", "type", "function"):
                _fail(f"{here}.{key}", "unknown key for a tool call (allowed: id, type, function)")
        if not isinstance(call.get("id"), str) or not call["id"]:
            _fail(f"{here}.id", f"must be a non-empty string, got {_kind(call.get('id'))} (tool messages refer to it)")
        if call.get("type") != "function":
            _fail(
                f"{here}.type",
                f'must be "function", got {json.dumps(call.get("type"))} (only function calls are supported)',
            )
        _check_call_function(call.get("function"), f"{here}.function")


def _check_call_function(fn: Any, where: str) -> None:
    """A called function: ``{"name": str, "arguments": str holding JSON}``."""
    if not isinstance(fn, dict):
        _fail(where, f'must be an object, got {_kind(fn)} (use {{"name": ..., "arguments": "{{...}}"}})')
    for key in fn:
        if key not in ("name", "arguments"):
            _fail(f"{where}.{key}", "unknown key (allowed: name, arguments)")
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        _fail(f"{where}.name", f"must be a non-empty string, got {_kind(fn.get('name'))} (name the function)")
    args = fn.get("arguments")
    if not isinstance(args, str):
        _fail(f"{where}.arguments", f"must be a string holding JSON, got {_kind(args)} (encode it with json.dumps)")
    try:
        json.loads(args)
    except ValueError as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        _fail(f"{where}.arguments", f"not valid JSON ({msg}; arguments must be a JSON-encoded string)")


def _check_learnable(messages: list) -> None:
    weights = [m.get("weight", 1) for m in messages if m["role"] == "assistant"]
    if not weights:
        _fail("messages", f"{NO_ASSISTANT} (add an assistant reply)")
    if all(w == 0 for w in weights):
        _fail("messages", f"{NO_ASSISTANT}: every assistant message has weight 0 (set weight 1 on at least one)")


# ---------------------------------------------------------------------------- tokens


def _check_tokens(n: int, context_length: int | None) -> int:
    if context_length is not None and n > context_length:
        _fail(
            "messages",
            f"{n} tokens, longer than the model's context of {context_length} tokens (shorten or split this example)",
        )
    return n


def _percentile(ordered: list[int], pct: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty list."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _token_stats(stats: Stats, counts: list[int], max_length: int | None, epochs: int) -> None:
    """Fill token fields from the valid rows' counts (rows over context are already excluded)."""
    if max_length is not None:
        stats.truncated = sum(1 for n in counts if n > max_length)
    billed = sum(min(n, max_length) if max_length is not None else n for n in counts)
    stats.billed_tokens = billed * epochs
    if not counts:
        return
    ordered = sorted(counts)
    stats.tokens_min, stats.tokens_max = ordered[0], ordered[-1]
    stats.tokens_p50 = _percentile(ordered, 50)
    stats.tokens_p90 = _percentile(ordered, 90)
    stats.tokens_p99 = _percentile(ordered, 99)
    stats.tokens_mean = sum(ordered) / len(ordered)
