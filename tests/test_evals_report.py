"""The HTML report: self-contained (nothing fetched from anywhere), model output escaped, the charts present,
and the row filter marks the right rows."""

from __future__ import annotations

import re

from tuneforge.evals import graders
from tuneforge.evals.graders.judge import PairwiseJudge
from tuneforge.evals.report_html import render
from tuneforge.evals.runner import Candidate, run_eval

EVIL = '<script>alert("x")</script><img src="https://evil.example/p.png"><a href="http://evil.example">x</a>'


class FirstJudge:
    """Always prefers the answer shown first: every judged pair's orders disagree."""

    model = "first-judge"

    def complete(self, messages, *, max_tokens, temperature, response_format=None):
        return '{"explanation": "first is best </pre><b>bold</b>", "winner": "A"}'


def report() -> dict:
    rows = [{"messages": [{"role": "user", "content": f"question {i} <u>"}, {"role": "assistant", "content": "42"}],
             "a": "42", "b": EVIL if i == 0 else "42"} for i in range(3)]
    return run_eval(rows, [Candidate("model <a>", column="a"), Candidate("model-b", column="b")],
                    graders=[graders.make("exact")], judge=PairwiseJudge(client=FirstJudge()), n_boot=50)


def test_the_page_works_offline():
    page = render(report())
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    assert page.count("<script>") == 1  # ours: the row filter
    assert page.count("<svg") >= 3  # scores with error bars, win-rate matrix, ranking


def test_model_output_and_names_are_escaped():
    page = render(report())
    assert EVIL not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "model &lt;a&gt;" in page and "model <a>" not in page
    assert "question 0 &lt;u&gt;" in page
    assert "first is best &lt;/pre&gt;&lt;b&gt;bold&lt;/b&gt;" in page


def test_rows_are_marked_for_the_disagreement_filter():
    page = render(report())
    marks = re.findall(r"<div class='row' data-differ='(\d)' data-inconsistent='(\d)'>", page)
    # row 0: the answers differ (exact 1 vs 0) and the biased judge's two orders disagreed; rows 1-2 identical
    assert marks == [("1", "1"), ("0", "0"), ("0", "0")]
    assert "<option value='differ'>" in page and "<option value='inconsistent'>" in page
    assert "(identical answers, not judged)" in page and "(the two orders disagreed)" in page


def test_an_empty_report_renders():
    page = render({"test_sets": [], "models": [], "graders": {}, "pairwise": [], "ratings": [], "judge": None,
                   "rows": []})
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
