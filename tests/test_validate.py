"""Tests for tuneforge.data.validate: one problem per bad line, right lines and fields, stats."""

import json

import pytest

from tuneforge.data.validate import Problem, check_row, raise_if_invalid, validate_file
from tuneforge.errors import UserError


def user(text="hi", **extra):
    return {"role": "user", "content": text, **extra}


def assistant(text="hello", **extra):
    return {"role": "assistant", "content": text, **extra}


def call(args='{"city": "Paris"}', call_id="call_1"):
    return {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": args}}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]

VALID_PLAIN = {"messages": [{"role": "system", "content": "be brief"}, user("2+2?"), assistant("4")]}
VALID_TOOLS = {
    "tools": TOOLS,
    "parallel_tool_calls": False,
    "messages": [
        user("weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call()]},
        {"role": "tool", "content": '{"temp": 20}', "tool_call_id": "call_1"},
        assistant("20 degrees"),
    ],
}
VALID_WEIGHTS = {
    "messages": [
        user("hi", name="alice"),
        assistant("bad reply", weight=0),
        user("again"),
        assistant("good reply", weight=1, name="bot"),
    ]
}
VALID_PARTS = {
    "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "tool_calls": [call()]},  # content absent is fine with tool_calls
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        assistant("sunny", refusal=None),
    ]
}
VALID_LEGACY = {
    "functions": [{"name": "weather", "parameters": {"type": "object"}}],
    "messages": [
        user("weather?"),
        {"role": "assistant", "content": None, "function_call": {"name": "weather", "arguments": "{}"}},
        {"role": "function", "name": "weather", "content": "sunny"},
        assistant("sunny"),
    ],
}
TOO_LONG = {"messages": [user("a very long question"), assistant("a very long answer")]}

# (line content, expected field or None for a valid row). Blank lines are interleaved on purpose.
LINES = [
    (VALID_PLAIN, None),
    ("this is not json", "json"),
    ("", None),
    ("[1, 2, 3]", "json"),
    ({}, "messages"),
    ({"messages": "hi"}, "messages"),
    (VALID_TOOLS, None),
    ({"messages": [user(), {"role": "bot", "content": "x"}]}, "messages[1].role"),
    ({"messages": [user(), assistant()], "metadata": {"a": 1}}, "metadata"),
    ({"messages": [user(), assistant(foo=1)]}, "messages[1].foo"),
    ({"messages": [{"role": "user"}, assistant()]}, "messages[0].content"),
    ("   ", None),
    (VALID_WEIGHTS, None),
    ({"messages": [{"role": "system", "content": "x"}, user()]}, "messages"),
    ({"messages": [user(), assistant(weight=2)]}, "messages[1].weight"),
    ({"messages": [user(weight=1), assistant()]}, "messages[0].weight"),
    (
        {"messages": [user(), {"role": "assistant", "content": None, "tool_calls": [call("{city: Paris")]}]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        {"messages": [user(), {"role": "assistant", "tool_calls": [call()]}, {"role": "tool", "content": "x"}]},
        "messages[2].tool_call_id",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                },
                assistant("a cat"),
            ]
        },
        "messages[0].content[1]",
    ),
    (VALID_PARTS, None),
    (TOO_LONG, "messages"),
    (VALID_LEGACY, None),
]

# Fake tokenizer: the valid rows get 10, 20, 30, 40, 50 tokens; TOO_LONG gets 5000.
TOKENS = {
    json.dumps(row, sort_keys=True): n
    for row, n in [
        (VALID_PLAIN, 10),
        (VALID_TOOLS, 20),
        (VALID_WEIGHTS, 30),
        (VALID_PARTS, 40),
        (VALID_LEGACY, 50),
        (TOO_LONG, 5000),
    ]
}


def fake_count(row):
    return TOKENS[json.dumps(row, sort_keys=True)]


def write(path, lines):
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def mixed(tmp_path):
    return write(tmp_path / "train.jsonl", [content for content, _ in LINES])


def test_one_problem_per_bad_line_with_line_and_field(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096, max_length=35)
    expected = [(i, f) for i, (content, f) in enumerate(LINES, start=1) if f is not None]
    assert [(p.line, p.field) for p in report.problems] == expected
    assert not report.ok


def test_valid_rows_kept_with_line_numbers(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096, max_length=35)
    valid = [(i, c) for i, (c, f) in enumerate(LINES, start=1) if f is None and not (isinstance(c, str))]
    assert report.rows == valid


def test_messages_are_specific(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096, max_length=35)
    by_line = {p.line: p.message for p in report.problems}
    assert by_line[2].startswith("not valid JSON (")
    assert "not an object" in by_line[4]
    assert by_line[5].startswith("missing")
    assert "must be a list" in by_line[6]
    assert 'unknown role "bot"' in by_line[8]
    assert by_line[9].startswith("unknown key")
    assert by_line[10].startswith("unknown key for an assistant message (allowed: role, content, name, tool_calls")
    assert by_line[11].startswith("missing")
    assert "no assistant message to learn from" in by_line[14]
    assert "must be 0 or 1" in by_line[15]
    assert "only assistant messages can have a weight" in by_line[16]
    assert by_line[17].startswith("not valid JSON")
    assert by_line[18].startswith("missing")
    assert "images are not supported by text models" in by_line[19]
    assert by_line[21] == (
        "5000 tokens, longer than the model's context of 4096 tokens (shorten or split this example)"
    )


def test_every_message_says_what_to_do(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096, max_length=35)
    for line in report.format_problems():
        assert line.endswith(")"), line


def test_format(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096)
    first = report.format_problems()[0]
    assert first.startswith(f"{mixed}:2: json: not valid JSON (")
    assert Problem(7, "messages[2].role", "bad (fix)").format("f.jsonl") == "f.jsonl:7: messages[2].role: bad (fix)"


def test_stats(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096, max_length=35, epochs=3)
    s = report.stats
    assert s.examples == 5
    assert s.invalid == 15
    assert s.assistant_messages == 1 + 2 + 2 + 2 + 2
    assert (s.tokens_min, s.tokens_p50, s.tokens_p90, s.tokens_p99, s.tokens_max) == (10, 30, 50, 50, 50)
    assert s.tokens_mean == 30
    assert s.truncated == 2  # 40 and 50 are over max_length 35
    assert s.billed_tokens == (10 + 20 + 30 + 35 + 35) * 3


def test_stats_without_token_counter(mixed):
    s = validate_file(mixed).stats
    assert s.tokens_p50 is None and s.billed_tokens is None and s.truncated == 0
    assert s.examples == 6  # TOO_LONG is valid without a context length
    assert s.invalid == 14


def test_no_max_length_bills_everything(mixed):
    s = validate_file(mixed, count_tokens=fake_count, context_length=4096, epochs=2).stats
    assert s.billed_tokens == (10 + 20 + 30 + 40 + 50) * 2
    assert s.truncated == 0


def test_percentiles_nearest_rank(tmp_path):
    rows = [{"messages": [user(str(n)), assistant()]} for n in range(1, 101)]
    path = write(tmp_path / "p.jsonl", rows)
    s = validate_file(path, count_tokens=lambda row: int(row["messages"][0]["content"])).stats
    assert (s.tokens_min, s.tokens_p50, s.tokens_p90, s.tokens_p99, s.tokens_max) == (1, 50, 90, 99, 100)
    assert s.tokens_mean == 50.5
    assert s.billed_tokens == 5050 * 3


def test_raise_if_invalid_message(mixed):
    report = validate_file(mixed, count_tokens=fake_count, context_length=4096)
    with pytest.raises(UserError) as info:
        raise_if_invalid(report)
    lines = str(info.value).split("\n")
    assert lines[:-1] == report.format_problems()
    assert lines[-1] == "15 of 20 examples are invalid: fix them or pass --skip-invalid"


def test_raise_if_invalid_passes_clean_file(tmp_path):
    report = validate_file(write(tmp_path / "ok.jsonl", [VALID_PLAIN, VALID_TOOLS]))
    assert report.ok and report.problems == []
    raise_if_invalid(report)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        validate_file(tmp_path / "nope.jsonl")


def test_directory(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        validate_file(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    report = validate_file(path)
    assert [(p.line, p.field) for p in report.problems] == [(1, "file")]
    assert report.format_problems()[0].startswith(f"{path}:1: file: no examples")
    with pytest.raises(UserError, match="no examples"):
        raise_if_invalid(report)


def test_non_utf8_line_is_one_problem_rest_checked(tmp_path):
    path = tmp_path / "bytes.jsonl"
    good = json.dumps(VALID_PLAIN).encode()
    path.write_bytes(good + b"\n" + b'{"messages": "\xff\xfe"}\n' + good + b"\n")
    report = validate_file(path)
    assert [(p.line, p.field) for p in report.problems] == [(2, "json")]
    assert "UTF-8" in report.problems[0].message
    assert [line for line, _ in report.rows] == [1, 3]


def test_utf8_bom_and_crlf_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    good = json.dumps(VALID_PLAIN).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n" + good + b"\r\n")
    report = validate_file(path)
    assert report.ok and len(report.rows) == 2


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [user(), assistant("a", weight=0)]}, "messages"),
        ({"messages": [user(), assistant(weight=True)]}, "messages[1].weight"),
        ({"messages": ["hi", assistant()]}, "messages[0]"),
        ({"messages": [{"content": "x"}, assistant()]}, "messages[0].role"),
        ({"messages": [user(), {"role": "assistant"}]}, "messages[1].content"),
        ({"messages": [user(), assistant(123)]}, "messages[1].content"),
        ({"messages": [user(), assistant([{"type": "text", "text": "x"}])]}, "messages[1].content"),
        ({"messages": [user(), {"role": "assistant", "tool_calls": {}}]}, "messages[1].tool_calls"),
        ({"messages": [user(), {"role": "assistant", "tool_calls": []}]}, "messages[1].tool_calls"),
        (
            {"messages": [user(), {"role": "assistant", "tool_calls": [{**call(), "type": "x"}]}]},
            "messages[1].tool_calls[0].type",
        ),
        (
            {"messages": [user(), {"role": "assistant", "tool_calls": [{"type": "function", "function": {}}]}]},
            "messages[1].tool_calls[0].id",
        ),
        (
            {
                "messages": [
                    user(),
                    {"role": "assistant", "tool_calls": [{**call(), "function": {"name": "f", "arguments": {}}}]},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [user(), {"role": "tool", "content": "x", "name": "f"}]}, "messages[1].name"),
        (
            {"tools": [{"type": "function", "function": {}}], "messages": [user(), assistant()]},
            "tools[0].function.name",
        ),
        ({"tools": [{"type": "code"}], "messages": [user(), assistant()]}, "tools[0].type"),
        ({"tools": {}, "messages": [user(), assistant()]}, "tools"),
        ({"parallel_tool_calls": "yes", "messages": [user(), assistant()]}, "parallel_tool_calls"),
        ({"functions": [{"description": "x"}], "messages": [user(), assistant()]}, "functions[0].name"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}, assistant()]}, "messages[0].content[0].type"),
    ],
)
def test_check_row(row, field):
    problem = check_row(row)
    assert problem is not None
    assert problem[0] == field


def test_check_row_valid():
    for row in (VALID_PLAIN, VALID_TOOLS, VALID_WEIGHTS, VALID_PARTS, VALID_LEGACY):
        assert check_row(row) is None


def test_nan_is_not_json(tmp_path):
    path = write(tmp_path / "nan.jsonl", ['{"messages": NaN}', VALID_PLAIN])
    report = validate_file(path)
    assert [(p.line, p.field) for p in report.problems] == [(1, "json")]


def test_an_upload_check_keeps_neither_rows_nor_every_problem(tmp_path):
    """Validating an upload (hundreds of MB) must not hold the file's rows or one object per bad line."""
    from tuneforge.data.validate import validate_file

    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([good] * 5 + ["not json"] * 10) + "\n")
    report = validate_file(path, keep_rows=False, max_problems=3)
    assert not report.ok and report.rows == [] and len(report.problems) == 3 and report.more_problems == 7
    assert report.stats.examples == 5 and report.stats.invalid == 10
