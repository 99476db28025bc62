"""Pruning rules: fixed texts (a long system prompt that every request repeats) cut out of a conversation.

The same function runs on training data (dataset export) and on requests to the fine-tuned model (serving),
so the model sees at inference exactly what it was trained on, minus the tokens it no longer needs.
"""

from __future__ import annotations

from typing import Any


def prune_text(text: str, rules: list[str]) -> str:
    for rule in rules:
        if rule:
            text = text.replace(rule, "")
    return text.strip()


def prune(messages: list[dict[str, Any]], rules: list[str]) -> list[dict[str, Any]]:
    """Messages with every rule's text removed from their string content; system and developer messages
    left empty by it are dropped. Messages are copied, never changed in place."""
    if not rules:
        return messages
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            pruned = prune_text(content, rules)
            if pruned == content:
                out.append(message)
                continue
            if not pruned and message.get("role") in ("system", "developer"):
                continue
            message = {**message, "content": pruned}
        out.append(message)
    return out
