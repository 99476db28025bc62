"""The one renderer of conversations: training rows and inference prompts both come from here.

Training and serving must see a conversation as the same tokens, so both call `encode_prompt` /
`encode_example`, which render with the model's own chat template and tokenize the whole text at once.
The loss covers assistant turns only (weight-0 turns excluded), up to and including the end-of-turn token,
so the model learns to stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import ConfigError

IGNORE = -100  # label of a token that carries no loss (PyTorch's cross-entropy ignore_index)


@dataclass
class Encoded:
    """A tokenized conversation: labels equal input ids where the loss counts, IGNORE elsewhere."""

    input_ids: list[int]
    labels: list[int] = field(default_factory=list)

    @property
    def num_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _tool_call_text(calls: list[dict]) -> str:
    parts = []
    for call in calls:
        fn = call.get("function", {})
        args = fn.get("arguments", "{}")
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            pass
        parts.append("<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": args}) + "\n</tool_call>")
    return "\n".join(parts)


def normalize_messages(messages: list[dict], tools: list[dict] | None, template: str) -> list[dict]:
    """Messages as plain {role, content} dicts a chat template can render.

    Templates without tool support (SmolLM2's, Gemma's) get tool calls written into the assistant text
    (Hermes-style `<tool_call>` blocks) and the tool list into the system message, so tool-using data still
    trains and serves the same way.
    """
    out = []
    for m in messages:
        role = "system" if m["role"] == "developer" else m["role"]
        content = _text(m.get("content"))
        if m.get("tool_calls") and "tool_calls" not in template:
            content = (content + "\n" if content else "") + _tool_call_text(m["tool_calls"])
        msg = {"role": role, "content": content}
        if "tool_calls" in template and m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        out.append(msg)
    if tools and "tools" not in template:
        listing = "You can call these tools:\n<tools>\n" + "\n".join(json.dumps(t) for t in tools) + "\n</tools>"
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + listing}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


def _template(tokenizer) -> str:
    template = tokenizer.chat_template
    if not template:
        raise ConfigError(
            "this model's tokenizer has no chat template: use a chat model, or a registry model that supplies one"
        )
    return template


def render(tokenizer, messages: list[dict], tools: list[dict] | None = None, generation_prompt: bool = False) -> str:
    template = _template(tokenizer)
    msgs = normalize_messages(messages, tools, template)
    kwargs = {"tools": tools} if tools and "tools" in template else {}
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)


def _tokenize(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of a prompt for the next assistant turn: what inference feeds the model."""
    return _tokenize(tokenizer, render(tokenizer, messages, tools, generation_prompt=True))


def encode_example(
    tokenizer, messages: list[dict], tools: list[dict] | None = None, max_length: int | None = None
) -> Encoded:
    """Token ids and labels of a training conversation (truncated on the right to max_length)."""
    full = render(tokenizer, messages, tools)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        start = len(render(tokenizer, messages[:i], tools, generation_prompt=True))
        end = len(render(tokenizer, messages[: i + 1], tools).rstrip())
        if not full.startswith(render(tokenizer, messages[: i + 1], tools)[:end]):
            raise ConfigError("the chat template renders a conversation's prefix differently from the whole")
        spans.append((start, end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [tok if any(s <= a < e for s, e in spans) else IGNORE for tok, (a, _b) in zip(ids, offsets)]
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels)
