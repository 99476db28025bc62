"""Preference pairs for DPO: OpenAI's rows checked line by line as chat rows are (one problem per bad line, with
its field path), TRL's prompt/chosen/rejected rows converted to OpenAI's shape, a file's format decided by its
first row, and `tuneforge data validate` on a preference file."""

from __future__ import annotations

import json
import re

from helpers import cli

from tuneforge.data.preference import from_trl, sides
from tuneforge.data.validate import validate_file

ASK = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Name: Ada"}]
GOOD, BAD = [{"role": "assistant", "content": '{"name": "Ada"}'}], [{"role": "assistant", "content": "Ada"}]


def pair(**changes) -> dict:
    row = {"input": {"messages": ASK}, "preferred_output": GOOD, "non_preferred_output": BAD}
    return {k: v for k, v in {**row, **changes}.items() if v is not None}


# (row, the field its problem names; None: valid)
LINES = [
    (pair(), None),
    (pair(input={"messages": ASK, "tools": [{"type": "function", "function": {"name": "lookup"}}]}), None),
    (pair(preferred_output=None), "preferred_output"),
    (pair(non_preferred_output=GOOD), "non_preferred_output"),  # the same answer twice: nothing to prefer
    (pair(preferred_output=GOOD + BAD), "preferred_output"),
    (pair(preferred_output=[{"role": "user", "content": "hi"}]), "preferred_output[0].role"),
    (pair(non_preferred_output=[{"role": "assistant", "content": "x", "weight": 0}]), "non_preferred_output[0].weight"),
    (pair(input={"messages": ASK + GOOD}), "input.messages[2]"),  # the answer belongs in the outputs
    (pair(input={"messages": []}), "input.messages"),
    (pair(input={"messages": [{"role": "robot", "content": "x"}]}), "input.messages[0].role"),
    (pair(input={"messages": ASK, "tools": "lookup"}), "input.tools"),
    (pair(extra=1), "extra"),
    ({"messages": ASK + GOOD}, "input"),  # a chat row in a preference file
    ({"prompt": ASK, "chosen": GOOD, "rejected": BAD}, None),  # TRL's explicit prompt
    ({"chosen": ASK + GOOD, "rejected": ASK + BAD}, None),  # TRL's implicit prompt
    ({"prompt": "Name: Ada", "chosen": "yes", "rejected": "no"}, None),  # TRL's strings
    ({"prompt": "Name: Ada", "chosen": "same", "rejected": "same"}, "non_preferred_output"),
    ({"prompt": ASK, "chosen": GOOD}, "rejected"),
]


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_each_bad_pair_is_one_problem_of_its_line_and_good_ones_are_kept_in_openai_shape(tmp_path):
    path = write(tmp_path / "prefs.jsonl", [row for row, _ in LINES])
    report = validate_file(path, preferences=True)
    assert report.format == "preference"
    expected = {i + 1: field for i, (_row, field) in enumerate(LINES) if field}
    assert {p.line: p.field for p in report.problems} == expected
    assert len(report.problems) == len(expected)
    assert report.stats.examples == len(LINES) - len(expected) and report.stats.invalid == len(expected)
    kept = [row for _line, row in report.rows]
    assert all(set(row) == {"input", "preferred_output", "non_preferred_output"} for row in kept)
    assert kept[-1] == {"input": {"messages": [{"role": "user", "content": "Name: Ada"}]},
                        "preferred_output": [{"role": "assistant", "content": "yes"}],
                        "non_preferred_output": [{"role": "assistant", "content": "no"}]}


def test_trl_rows_become_openai_pairs_and_the_implicit_prompt_is_what_both_share():
    implicit = from_trl({"chosen": ASK + GOOD, "rejected": ASK + BAD})
    assert implicit == {"input": {"messages": ASK}, "preferred_output": GOOD, "non_preferred_output": BAD}
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    explicit = from_trl({"prompt": ASK, "chosen": GOOD, "rejected": BAD, "tools": tools})
    assert explicit["input"] == {"messages": ASK, "tools": tools}
    chosen, rejected = sides(explicit)
    assert chosen == {"messages": ASK + GOOD, "tools": tools} and rejected["messages"] == ASK + BAD


def test_the_first_row_decides_the_format_and_a_pair_in_a_chat_file_is_a_problem(tmp_path):
    chat_first = write(tmp_path / "chat.jsonl", [{"messages": ASK + GOOD}, pair()])
    report = validate_file(chat_first, preferences=True)
    assert report.format == "chat" and [(p.line, p.field) for p in report.problems] == [(2, "messages")]
    assert "preference pair in a chat file" in report.problems[0].message
    plain = validate_file(chat_first)  # callers that take chat only (training, uploads) see an unknown key
    assert plain.format == "chat" and [(p.line, p.field) for p in plain.problems] == [(2, "input")]
    broken_first = tmp_path / "broken.jsonl"
    broken_first.write_text("{oops\n" + json.dumps(pair()) + "\n")
    report = validate_file(broken_first, preferences=True)
    assert report.format == "preference" and [(p.line, p.field) for p in report.problems] == [(1, "json")]


def test_cli_validates_a_preference_file_with_token_stats(tmp_path, smollm2):
    good = write(tmp_path / "good.jsonl", [pair(), {"prompt": "Name: Bo", "chosen": "Bo", "rejected": "no"}])
    proc = cli("data", "validate", good)
    assert "ok" in proc.stderr and "preference pairs (DPO)" in proc.stdout
    assert re.search(r"valid pairs\s+│\s+2", proc.stdout) and "billed tokens" in proc.stdout
    bad = write(tmp_path / "bad.jsonl", [pair(), pair(non_preferred_output=GOOD)])
    proc = cli("data", "validate", bad, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(rf"^{re.escape(bad)}:2: non_preferred_output: the same as preferred_output", proc.stderr, re.M)
