"""Exact-answer scoring: did the model give the answer the data set asks for, and for JSON answers, how much of it.

Specialist tasks (extraction into a fixed JSON shape, routing to one label) have one right answer per row, so
the honest score is exact match, not similarity. A bare string comparison is too harsh in two ways that
say nothing about the model's skill: models often wrap JSON in a markdown code fence or pad it with
whitespace, and two JSON objects with the same content may list their keys in a different order. This
module forgives exactly those and nothing else, and adds per-field accuracy for JSON-object answers so a
model that gets 3 of 4 fields right is told apart from one that gets none. Pure Python, no torch: it is
used by the CLI, the server and the tests alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# A whole answer wrapped in a markdown fence: ```json\n...\n```, ```\n...\n``` or ```...``` on one line.
_FENCE = re.compile(r"\A```(?:[A-Za-z0-9_+-]*[ \t]*\n)?(?P<body>.*?)```\Z", re.DOTALL)

_MISSING = object()


def normalize(text: str) -> str:
    """Strip surrounding whitespace and, if the whole text is one markdown code fence, the fence."""
    text = text.strip()
    match = _FENCE.match(text)
    if match:
        text = match.group("body").strip()
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def _parse(text: str) -> Any:
    """The JSON value in normalized text, or _MISSING if it is not strict JSON (NaN and Infinity refused)."""
    try:
        return json.loads(normalize(text), parse_constant=_reject_constant)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return _MISSING


def _same(a: Any, b: Any) -> bool:
    """Equality of parsed JSON values, except that true/false never equal the numbers 1/0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b  # 1 and 1.0 are the same JSON number
    if type(a) is not type(b):
        return False
    return a == b


def json_equal(a: Any, b: Any) -> bool:
    """Deep equality of parsed JSON values (key order ignored; true/false never equal the numbers 1/0)."""
    return _same(a, b)


def answers_match(prediction: str, reference: str) -> bool:
    """True if both are JSON and parse to equal values (key order ignored), else if the normalized texts are equal."""
    pred, ref = _parse(prediction), _parse(reference)
    if pred is not _MISSING and ref is not _MISSING:
        return _same(pred, ref)
    return normalize(prediction) == normalize(reference)


def field_accuracy(prediction: str, reference: str) -> float | None:
    """The fraction of the reference object's keys whose value the prediction gets exactly right.

    None when the reference is not a JSON object (the measure does not apply). A prediction that is not a
    JSON object scores 0.0. An empty reference object scores 1.0 against any JSON object, else 0.0.
    """
    ref = _parse(reference)
    if not isinstance(ref, dict):
        return None
    pred = _parse(prediction)
    if not isinstance(pred, dict):
        return 0.0
    if not ref:
        return 1.0
    right = sum(1 for key, value in ref.items() if key in pred and _same(pred[key], value))
    return right / len(ref)


@dataclass
class Score:
    """Scores over a set of rows: exact_match and field_accuracy are fractions in [0, 1]."""

    n: int
    exact_match: float
    field_accuracy: float | None


def score(predictions: list[str], references: list[str]) -> Score:
    """Score predictions against references row by row.

    field_accuracy is the mean over the rows whose reference is a JSON object, None if there are none.
    No rows gives exact_match 0.0.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions, "
            f"{len(references)} references; give one prediction per reference"
        )
    n = len(references)
    matches = sum(1 for p, r in zip(predictions, references) if answers_match(p, r))
    fields = [f for f in (field_accuracy(p, r) for p, r in zip(predictions, references)) if f is not None]
    return Score(
        n=n,
        exact_match=matches / n if n else 0.0,
        field_accuracy=sum(fields) / len(fields) if fields else None,
    )


def reference_answer(row: dict) -> str:
    """The content of the row's last assistant message: the answer a chat fine-tuning row teaches."""
    messages = row.get("messages") if isinstance(row, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": "..."}]
                texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
                if texts and all(isinstance(t, str) for t in texts):
                    return "".join(texts)
            raise ValueError("the row's last assistant message has no text content")
    raise ValueError("row has no assistant message (a 'messages' list with role 'assistant'), so no reference answer")
