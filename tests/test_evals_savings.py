"""The savings table on exact numbers."""

from __future__ import annotations

import pytest

from tuneforge.errors import UserError
from tuneforge.evals.savings import HourlyPrice, TokenPrice, Traffic, savings_table, table_rows, win_rate_from_report

# 10 days of traffic: 20,000 calls, 30M prompt tokens, 6M completion tokens, $150 on the teacher
TRAFFIC = Traffic(calls=20_000, prompt_tokens=30_000_000, completion_tokens=6_000_000, cost_usd=150.0, days=10)


def test_hourly_pricing_from_measured_speed():
    # 6M tokens at 500 tokens/s = 12,000 s = 3.333 h; at $1.20/h = $4.00
    table = savings_table(TRAFFIC, student="ft:small", teacher="gpt-4o",
                          price=HourlyPrice(tokens_per_second=500, usd_per_hour=1.2))
    assert table["teacher"]["cost_per_day"] == pytest.approx(15.0)
    assert table["teacher"]["cost_per_month"] == pytest.approx(450.0)
    assert table["student"]["hours"] == pytest.approx(10 / 3)
    assert table["student"]["cost_usd"] == pytest.approx(4.0)
    assert table["student"]["cost_per_day"] == pytest.approx(0.4)
    assert table["student"]["cost_per_month"] == pytest.approx(12.0)
    assert table["savings_per_day"] == pytest.approx(14.6)
    assert table["savings_per_month"] == pytest.approx(438.0)
    assert table["savings_pct"] == pytest.approx(100 * (1 - 4 / 150))
    assert table["notes"]  # prompt processing not counted
    # with a prefill rate: + 30M / 10,000 tokens/s = 3,000 s more: 15,000 s = 4.1667 h = $5.00
    with_prefill = savings_table(TRAFFIC, student="s", price=HourlyPrice(tokens_per_second=500, usd_per_hour=1.2,
                                                                         prompt_tokens_per_second=10_000))
    assert with_prefill["student"]["cost_usd"] == pytest.approx(5.0) and not with_prefill["notes"]


def test_per_token_pricing():
    # 30M in at $0.10/M = $3; 6M out at $0.40/M = $2.40
    table = savings_table(TRAFFIC, student="s", price=TokenPrice(usd_per_1m_input=0.1, usd_per_1m_output=0.4))
    assert table["student"]["cost_usd"] == pytest.approx(5.4)
    assert table["student"]["hours"] is None
    assert table["student"]["cost_per_month"] == pytest.approx(16.2)
    assert table["savings_per_month"] == pytest.approx(450 - 16.2)


REPORT = {"judge": {"label": "judge"}, "pairwise": [
    {"a": "gpt-4o", "b": "ft:small", "grader": "exact", "win_rate": 0.6, "ci_low": 0.5, "ci_high": 0.7,
     "wins": 50, "ties": 20, "losses": 30, "n": 100},
    {"a": "gpt-4o", "b": "ft:small", "grader": "judge", "win_rate": 0.55, "ci_low": 0.45, "ci_high": 0.65,
     "wins": 40, "ties": 30, "losses": 30, "n": 100},
]}


def test_the_win_rate_comes_from_the_students_side_and_prefers_the_judge():
    w = win_rate_from_report(REPORT, "ft:small", "gpt-4o")
    assert w["grader"] == "judge"
    assert (w["wins"], w["ties"], w["losses"], w["n"]) == (30, 30, 40, 100)
    assert (w["win_rate"], w["ci_low"], w["ci_high"]) == pytest.approx((0.45, 0.35, 0.55))
    exact = win_rate_from_report(REPORT, "ft:small", "gpt-4o", grader="exact")
    assert exact["win_rate"] == pytest.approx(0.4)
    assert win_rate_from_report(REPORT, "gpt-4o", "ft:small")["win_rate"] == 0.55
    with pytest.raises(UserError, match="no judge comparison of 'ft:other' with 'gpt-4o'"):
        win_rate_from_report(REPORT, "ft:other", "gpt-4o")


def test_table_rows_for_printing():
    table = savings_table(TRAFFIC, student="ft:small", teacher="gpt-4o",
                          price=HourlyPrice(tokens_per_second=500, usd_per_hour=1.2),
                          win_rate=win_rate_from_report(REPORT, "ft:small", "gpt-4o"))
    rows = dict((what, (t, s)) for what, t, s in table_rows(table))
    assert rows["cost per month (30 days)"] == ("$450.00", "$12.00")
    assert rows["savings per month"] == ("", "$438.00 (97.3%)")
    assert rows["student's win rate vs teacher"][1] == "45.0% (95% CI 35.0% – 55.0%, judge, n=100)"


def test_no_traffic_days_is_refused():
    with pytest.raises(ValueError):
        Traffic(calls=1, prompt_tokens=1, completion_tokens=1, cost_usd=1, days=0)
