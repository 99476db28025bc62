"""`tuneforge data validate` as a user runs it: every bad line reported once, exit 1, no traceback."""

from __future__ import annotations

import re

from helpers import cli
from test_validate import LINES, TOO_LONG, write


def test_cli_reports_one_error_per_bad_line(tmp_path, smollm2):
    too_long = {"messages": [{"role": "user", "content": "word " * 9000}, {"role": "assistant", "content": "ok"}]}
    # TOO_LONG is too long only for the module test's fake token counter: here the real tokenizer counts
    cases = [(content, field) for content, field in LINES if content is not TOO_LONG] + [(too_long, "messages")]
    path = write(tmp_path / "bad.jsonl", [content for content, _field in cases])
    expected = {i + 1: field for i, (_c, field) in enumerate(cases) if field}

    proc = cli("data", "validate", str(path), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    reported = re.findall(rf"^{re.escape(str(path))}:(\d+): ([^:]+): (.+)$", proc.stderr, re.M)
    assert {int(line): field for line, field, _msg in reported} == expected
    assert len(reported) == len(expected)  # one error per bad line, no more
    assert "longer than the model's context of 8192 tokens" in proc.stderr
    assert "valid examples" in proc.stdout and "billed tokens for 3 epochs" in proc.stdout


def test_cli_passes_a_good_file_with_stats(tmp_path, smollm2):
    from helpers import toy_rows, write_jsonl

    path = write_jsonl(tmp_path / "good.jsonl", toy_rows(20))
    proc = cli("data", "validate", str(path), "--epochs", "2")
    assert "ok" in proc.stderr
    assert re.search(r"valid examples\s+│\s+20", proc.stdout)
    assert "billed tokens for 2 epochs" in proc.stdout


def test_cli_missing_file_is_one_line(tmp_path):
    proc = cli("data", "validate", str(tmp_path / "none.jsonl"), check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
