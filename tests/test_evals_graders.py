"""The pointwise graders and their registry, on hand-made rows with known right answers."""

from __future__ import annotations

import json

import pytest

from tuneforge.errors import UserError
from tuneforge.evals import graders
from tuneforge.evals.graders.json_fields import field_score
from tuneforge.evals.graders.numeric import last_number
from tuneforge.evals.outputs import Output, prompt_of, reference_of


def row(answer: str | dict, **extra) -> dict:
    final = {"role": "assistant", "content": answer} if isinstance(answer, str) else {"role": "assistant", **answer}
    return {"messages": [{"role": "user", "content": "q"}, final], **extra}


def call(name: str, args: dict | str) -> dict:
    return {"id": "call_1", "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}


def score(grader, r: dict, output) -> float | None:
    return grader.grade(r, Output.of(output)).score


# registry


def test_registry_lists_and_builds_graders():
    assert graders.names() == ["by_row", "criterion", "exact", "json", "judge", "numeric", "regex"]
    assert graders.get("numeric").Spec.model_fields["abs_tol"].description
    assert graders.make({"name": "numeric", "abs_tol": 0.5}).spec.abs_tol == 0.5
    assert graders.make({"name": "exact", "label": "strict"}).label == "strict"


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(UserError, match="unknown grader 'fuzzy': choose one of by_row, criterion, exact, json"):
        graders.get("fuzzy")
    with pytest.raises(UserError, match=r"grader 'numeric': tolerance: Extra inputs .*its options: label, abs_tol"):
        graders.make({"name": "numeric", "tolerance": 1})
    with pytest.raises(UserError, match="not a valid regular expression"):
        graders.make({"name": "regex", "pattern": "(unclosed"})
    with pytest.raises(UserError, match="needs a judge model"):
        graders.make("judge")


# exact


def test_exact_forgives_formatting_only():
    exact = graders.make("exact")
    assert score(exact, row('{"a": 1, "b": [2]}'), '```json\n{"b": [2], "a": 1}\n```') == 1.0
    assert score(exact, row("PAY-OPS"), "  PAY-OPS\n") == 1.0
    assert score(exact, row("PAY-OPS"), "pay-ops") == 0.0
    assert score(exact, {"messages": [{"role": "user", "content": "q"}]}, "x") is None


def test_exact_compares_tool_calls_by_name_and_arguments():
    exact = graders.make("exact")
    ref = row({"content": None, "tool_calls": [call("get_weather", {"city": "Oslo", "days": 2})]})
    same = {"role": "assistant", "tool_calls": [call("get_weather", '{"days": 2,  "city": "Oslo"}')]}
    assert score(exact, ref, same) == 1.0
    assert score(exact, ref, {"tool_calls": [call("get_weather", {"city": "Oslo", "days": 3})]}) == 0.0
    assert score(exact, ref, "get_weather(Oslo)") == 0.0


# json (OpenPipe's field comparison)


def test_json_scores_the_share_of_reference_fields_right():
    grader = graders.make("json")
    ref = row('{"name": "Priya", "order": "A-1", "items": [1, 2], "urgent": true}')
    assert score(grader, ref, '{"name": "Priya", "order": "A-1", "items": [1, 2], "urgent": true}') == 1.0
    assert score(grader, ref, '```json\n{"name": "Priya", "order": "B-2", "items": [2, 1], "urgent": 1}\n```') == 0.25
    assert score(grader, ref, "Priya, A-1") == 0.0  # unparseable
    assert score(grader, ref, "[1, 2]") == 0.0  # not an object
    assert score(grader, row("plain text"), "plain text") is None  # the grader does not apply


def test_json_tool_calls_need_the_same_function_name():
    grader = graders.make("json")
    ref = row({"content": None, "tool_calls": [call("refund", {"order": "A-1", "amount": 20})]})
    assert score(grader, ref, {"tool_calls": [call("refund", {"order": "A-1", "amount": 25})]}) == 0.5
    assert score(grader, ref, {"tool_calls": [call("cancel", {"order": "A-1", "amount": 20})]}) == 0.0
    assert score(grader, ref, {"tool_calls": [call("refund", "{not json")]}) == 0.0
    assert score(grader, ref, '{"order": "A-1", "amount": 20}') == 0.0  # JSON text is not a call
    # two reference calls: mean over them; the best answer call with each name counts
    two = row({"tool_calls": [call("a", {"x": 1}), call("b", {"y": 1, "z": 2})]})
    answer = {"tool_calls": [call("b", {"y": 0, "z": 0}), call("b", {"y": 1, "z": 0}), call("a", {"x": 1})]}
    assert score(grader, two, answer) == pytest.approx((1 + 0.5) / 2)


def test_field_score_edge_cases():
    assert field_score({}, {"anything": 1}) == 1.0
    assert field_score({}, None) == 0.0
    assert field_score({"a": 1}, {"a": 1.0}) == 1.0
    assert field_score({"a": True}, {"a": 1}) == 0.0
    assert field_score({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2}]}}) == 1.0


# regex


def test_regex_search_fullmatch_flags_and_negate():
    search = graders.make({"name": "regex", "pattern": r"\bparis\b", "flags": ["IGNORECASE"]})
    assert score(search, row("x"), "The capital is Paris.") == 1.0
    assert score(search, row("x"), "Parisian") == 0.0
    full = graders.make({"name": "regex", "pattern": r"[A-Z]{3}-\d+", "mode": "fullmatch"})
    assert score(full, row("x"), "```\nABC-12\n```") == 1.0
    assert score(full, row("x"), "code ABC-12") == 0.0
    forbid = graders.make({"name": "regex", "pattern": "refund", "negate": True})
    assert score(forbid, row("x"), "We cannot help.") == 1.0
    assert forbid.grade(row("x"), Output("You get a refund")).detail == "matches the forbidden pattern"



def test_a_catastrophic_pattern_times_out_and_scores_zero_instead_of_hanging():
    import time

    grader = graders.make({"name": "regex", "pattern": "(a+)+$"})
    start = time.monotonic()
    grade = grader.grade(row("x"), Output("a" * 50_000 + "!"))
    assert time.monotonic() - start < 10
    assert grade.score == 0.0 and "timed out" in grade.detail
    by_row = graders.make("by_row")  # a row's own pattern is held to the same limit
    assert by_row.grade(row("x", grader={"name": "regex", "pattern": "(a+)+$", "negate": True}),
                        Output("a" * 50_000 + "!")).score == 0.0


def test_tenant_options_are_bounded():
    with pytest.raises(UserError, match="pattern: String should have at most 1000 characters"):
        graders.make({"name": "regex", "pattern": "a" * 1001})
    with pytest.raises(UserError, match="label: String should have at most 200 characters"):
        graders.make({"name": "exact", "label": "x" * 201})
    for option, value in [("concurrency", 33), ("max_tokens", 4097), ("temperature", 2.5), ("criteria", "c" * 4001)]:
        for name, extra in [("judge", {}), ("criterion", {"criterion": "c"})]:
            with pytest.raises(UserError, match=option):
                graders.make({"name": name, option: value, **extra}, client=object())
    with pytest.raises(UserError, match="criterion: String should have at most 4000 characters"):
        graders.make({"name": "criterion", "criterion": "c" * 4001}, client=object())


# numeric


@pytest.mark.parametrize("text, number", [
    ("The answer is 85.", 85.0), ("-3.5 then 1,234.5", 1234.5), ("1e3", 1000.0), ("from 3-5", 5.0),
    ("none here", None), ("x2 is a name, 7 is not", 7.0), (".5", 0.5),
])
def test_last_number(text, number):
    assert last_number(text) == number


def test_numeric_with_and_without_tolerance():
    exact = graders.make("numeric")
    assert score(exact, row("85"), "37 + 48 = 85.0") == 1.0
    assert score(exact, row("85"), "84") == 0.0
    assert score(exact, row("85"), "eighty-five") == 0.0
    assert score(exact, row("no number"), "85") is None
    loose = graders.make({"name": "numeric", "abs_tol": 0.5, "rel_tol": 0.01})
    assert score(loose, row("3.14159"), "about 3.5") == 1.0  # abs_tol
    assert score(loose, row("1000"), "1,009") == 1.0  # rel_tol: 10 allowed
    assert score(loose, row("1000"), "1,011") == 0.0


# by_row


def test_by_row_uses_each_rows_own_grader():
    grader = graders.make({"name": "by_row", "label": "general"})
    assert grader.label == "general"
    assert score(grader, row("85", grader="numeric"), "It is 85.") == 1.0
    assert score(grader, row("85", grader="exact"), "It is 85.") == 0.0
    regex = {"name": "regex", "pattern": r"\bOslo\b"}
    assert score(grader, row("Oslo", grader=regex), "It is Oslo.") == 1.0
    assert score(grader, row("Oslo"), "Oslo") is None
    assert score(graders.make({"name": "by_row", "default": "exact"}), row("Oslo"), "Oslo") == 1.0
    with pytest.raises(UserError, match="cannot be chosen per row"):
        grader.grade(row("x", grader={"name": "criterion", "criterion": "c"}), Output("x"))


# rows and outputs


def test_prompt_and_reference_of_a_row():
    r = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
         "tools": [{"type": "function", "function": {"name": "f"}}], "id": 3}
    assert prompt_of(r) == {"messages": r["messages"][:2], "tools": r["tools"]}
    assert reference_of(r) == Output("ab")
    assert reference_of({"messages": [{"role": "user", "content": "u"}]}) is None
    assert Output.of({"text": "x", "error": "refused"}).to_dict() == {"text": "x", "error": "refused"}
    with_args_dict = Output.of({"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]})
    assert with_args_dict.tool_calls == [{"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
