"""Preference rows, for DPO: OpenAI's format, and TRL's rows converted to it.

OpenAI's preference JSONL (one pair per line; the two outputs answer the same input):

    {"input": {"messages": [...], "tools": [...], "parallel_tool_calls": true},
     "preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [{"role": "assistant", ...}]}

TRL's rows are accepted on import and turned into that shape (`from_trl`): `prompt` / `chosen` / `rejected`
as messages or as plain strings, or `chosen` / `rejected` as whole conversations whose shared beginning is the
input (TRL's implicit prompt). The checks reuse the chat format's (`data/validate.py`), so a message is judged
the same wherever it appears, and each bad line gets one problem with its field path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.data import validate as chat
from tuneforge.data.render import IGNORE, encode_example, encode_prompt

KEYS = ("input", "preferred_output", "non_preferred_output")
INPUT_KEYS = ("messages", "tools", "parallel_tool_calls")
TRL_KEYS = ("prompt", "chosen", "rejected", "tools")
OUTPUTS = ("preferred_output", "non_preferred_output")


def format_of(row: Any) -> str:
    """"preference" (OpenAI's), "trl" (prompt/chosen/rejected) or "chat", by the row's keys."""
    if isinstance(row, dict):
        if any(k in row for k in KEYS):
            return "preference"
        if "chosen" in row or "rejected" in row:
            return "trl"
    return "chat"


def check_row(row: Any) -> None:
    """Raise the chat checker's `_Bad` at the first problem of an OpenAI preference row."""
    if not isinstance(row, dict):
        chat._fail("json", f"a JSON {chat._kind(row)}, not an object (each line must be "
                           '{"input": ..., "preferred_output": [...], "non_preferred_output": [...]})')
    for key in row:
        if key not in KEYS:
            chat._fail(str(key), f"unknown key (allowed: {', '.join(KEYS)})")
    for key in KEYS:
        if key not in row:
            hint = '{"messages": [...]}' if key == "input" else '[{"role": "assistant", "content": ...}]'
            chat._fail(key, f"missing (add {hint})")
    _check_input(row["input"])
    for key in OUTPUTS:
        _check_output(row[key], key)
    if row["preferred_output"] == row["non_preferred_output"]:
        chat._fail("non_preferred_output", "the same as preferred_output: there is nothing to prefer (give the "
                                           "worse answer here)")


def _check_input(value: Any) -> None:
    if not isinstance(value, dict):
        chat._fail("input", f'must be an object, got {chat._kind(value)} (use {{"messages": [...]}})')
    for key in value:
        if key not in INPUT_KEYS:
            chat._fail(f"input.{key}", f"unknown key (allowed: {', '.join(INPUT_KEYS)})")
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "missing" if messages is None else "empty" if messages == [] else f"a {chat._kind(messages)}"
        chat._fail("input.messages", f"{what}: give the conversation up to the answer, as a list of messages")
    for i, message in enumerate(messages):
        chat._check_message(message, f"input.messages[{i}]")
    if messages[-1].get("role") == "assistant":
        chat._fail(f"input.messages[{len(messages) - 1}]", "the input ends with an assistant message: the answers "
                                                            "go in preferred_output and non_preferred_output")
    if "tools" in value:
        try:
            chat._check_tools(value["tools"])
        except chat._Bad as bad:
            chat._fail(f"input.{bad.field}", bad.message)
    if "parallel_tool_calls" in value and not isinstance(value["parallel_tool_calls"], bool):
        chat._fail("input.parallel_tool_calls", "must be true or false (or remove it)")


def _check_output(value: Any, key: str) -> None:
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} messages" if isinstance(value, list) else f"a {chat._kind(value)}"
        chat._fail(key, f'must be a list of exactly one assistant message, got {got} (use [{{"role": '
                        '"assistant", "content": ...}])')
    message = value[0]
    chat._check_message(message, f"{key}[0]")
    if message.get("role") != "assistant":
        chat._fail(f"{key}[0].role", f"must be assistant, got {message.get('role')!r} (the answer being judged)")
    if "weight" in message:
        chat._fail(f"{key}[0].weight", "a preference pair has no weights (remove it)")


def from_trl(row: Any) -> dict[str, Any]:
    """A TRL preference row as OpenAI's; the chat checker's `_Bad` when it has no pair to take."""
    for key in row:
        if key not in TRL_KEYS:
            chat._fail(str(key), f"unknown key in a prompt/chosen/rejected row (allowed: {', '.join(TRL_KEYS)})")
    for key in ("chosen", "rejected"):
        if key not in row:
            chat._fail(key, "missing: a TRL preference row has both chosen and rejected")
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if prompt is None:  # implicit prompt: two whole conversations, the input is what they share
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            chat._fail("prompt", "missing: give a prompt, or chosen and rejected as whole conversations")
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    out: dict[str, Any] = {"input": {"messages": messages}}
    if "tools" in row:
        out["input"]["tools"] = row["tools"]
    for key, answer in (("preferred_output", chosen), ("non_preferred_output", rejected)):
        out[key] = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else answer
    return out


def normalized(row: Any) -> dict[str, Any]:
    """A checked preference row in OpenAI's shape, from either format; `_Bad` at its first problem."""
    row = from_trl(row) if format_of(row) == "trl" else row
    check_row(row)
    return row


def sides(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pair as two chat rows (input + preferred, input + non-preferred), e.g. to count their tokens."""
    base = {"tools": row["input"]["tools"]} if "tools" in row["input"] else {}
    messages = row["input"]["messages"]
    return ({"messages": messages + row["preferred_output"], **base},
            {"messages": messages + row["non_preferred_output"], **base})


@dataclass
class EncodedPair:
    """A tokenized pair: the prompt's ids once, and each answer's ids after it (up to its end-of-turn token)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]

    def __len__(self) -> int:
        return len(self.prompt) + len(self.chosen) + len(self.rejected)


def encode_pair(tokenizer, row: dict[str, Any], max_length: int | None = None) -> EncodedPair | None:
    """A checked pair (OpenAI's shape) as token ids, rendered as training renders chat rows; None when its prompt
    alone fills `max_length` (each prompt+answer keeps its start up to `max_length`).

    The prompt is the tokens both answers' conversations share (TRL cuts it the same way): with templates whose
    answer text merges with the generation prompt's last token, the answer starts where the two first differ.
    """
    messages, tools = row["input"]["messages"], row["input"].get("tools")
    prompt = encode_prompt(tokenizer, messages, tools)
    sides = []
    for key in OUTPUTS:
        enc = encode_example(tokenizer, messages + row[key], tools)
        end = max((i + 1 for i, t in enumerate(enc.labels) if t != IGNORE), default=len(enc.input_ids))
        sides.append(enc.input_ids[:end])
    p = 0
    while p < len(prompt) and all(p < len(s) and s[p] == prompt[p] for s in sides):
        p += 1
    if max_length is not None and p >= max_length:
        return None
    room = None if max_length is None else max_length - p
    return EncodedPair(prompt[:p], sides[0][p:][:room], sides[1][p:][:room])
