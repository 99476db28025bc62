"""`json`: field-level credit for structured answers (JSON objects and tool calls), OpenPipe's field comparison.

Exact match scores an extraction with one wrong field of ten the same as garbage; this grader gives 0.9.
For each function call in the reference: 0 if the answer makes no call with that function name, else the
best, over the answer's calls with that name, of the share of the reference arguments' keys whose values
are deep-equal (true/false never equal 1/0); the row's score is the mean over the reference's calls. A JSON
object answer is compared as one call whose arguments are the object. Unparseable output scores 0; a
reference with no arguments (or `{}`) is matched by any call of that name. Rows whose reference is neither
a JSON object nor a tool call are not graded (None).
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.evals.exact import json_equal, normalize
from tuneforge.evals.graders.base import Grade, Grader
from tuneforge.evals.outputs import Output, reference_of

_CONTENT = "(content)"  # the function name a JSON answer is compared under


class JsonFieldsGrader(Grader):
    name = "json"

    def grade(self, row: dict, output: Output) -> Grade:
        reference = reference_of(row)
        wanted = _reference_calls(reference) if reference is not None else None
        if not wanted:
            return Grade(None, "the reference is neither a JSON object nor a tool call")
        given = _answer_calls(output)
        scores = [max((field_score(args, got) for name_, got in given if name_ == name), default=0.0)
                  for name, args in wanted]
        score = sum(scores) / len(scores)
        return Grade(score, None if score == 1.0 else f"{score:.0%} of the reference's fields right")


def field_score(reference_args: Any, answer_args: Any) -> float:
    """Share of the reference object's keys whose values the answer's object has deep-equal."""
    if not isinstance(reference_args, dict) or not reference_args:
        return 1.0 if isinstance(answer_args, dict) or reference_args == answer_args else 0.0
    if not isinstance(answer_args, dict):
        return 0.0
    right = sum(1 for k, v in reference_args.items() if k in answer_args and json_equal(answer_args[k], v))
    return right / len(reference_args)


def _reference_calls(reference: Output) -> list[tuple[str, Any]]:
    if reference.tool_calls:
        return [(name, _parse(args) if args.strip() else {}) for name, args in _raw_calls(reference)]
    value = _parse(reference.text)
    return [(_CONTENT, value)] if isinstance(value, dict) else []


def _answer_calls(output: Output) -> list[tuple[str, Any]]:
    calls = [(name, _parse(args) if args.strip() else {}) for name, args in _raw_calls(output)]
    value = _parse(output.text)
    if isinstance(value, dict):
        calls.append((_CONTENT, value))
    return calls


def _raw_calls(output: Output) -> list[tuple[str, str]]:
    return [(str((c.get("function") or {}).get("name")), (c.get("function") or {}).get("arguments") or "")
            for c in output.tool_calls or []]


def _parse(text: str) -> Any:
    try:
        return json.loads(normalize(text))
    except ValueError:
        return None
