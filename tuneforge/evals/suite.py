"""Bundled eval suites and the forgetting check: did fine-tuning cost the base model its general skills?

`general` (made by scripts/make_general_suite.py) is a few hundred short questions with exact answers:
instruction following, arithmetic, facts. Each row names its grader, so the suite is graded by one `by_row`
grader labelled `general`. Run it on the base and on its fine-tune (`tuneforge evals run --suite general
--model BASE --model FT`), then `forgetting(report, base, tuned)` gives the fine-tune's score minus the base's,
overall and per category, each with a paired bootstrap 95% CI over the suite's rows: an interval wholly below
0 means skills were lost.
"""

from __future__ import annotations

from importlib import resources

from tuneforge.errors import UserError
from tuneforge.evals import stats
from tuneforge.evals.graders.by_row import ByRowGrader
from tuneforge.evals.runner import TestSet, load_rows

SUITES = {"general": "general.jsonl"}
SUITE_GRADER = "general"


def names() -> list[str]:
    return sorted(SUITES)


def load_suite(name: str) -> TestSet:
    """A bundled suite's rows, as a test set named after it."""
    if name not in SUITES:
        raise UserError(f"unknown suite '{name}': choose one of {', '.join(names())}")
    path = resources.files("tuneforge.evals") / "suites" / SUITES[name]
    with resources.as_file(path) as file:
        return TestSet(name, load_rows(file))


def suite_graders() -> list[ByRowGrader]:
    """The graders a bundled suite is run with: each row's own, as one score labelled `general`."""
    return [ByRowGrader({"label": SUITE_GRADER})]


def forgetting(report: dict, base: str, tuned: str, *, grader: str = SUITE_GRADER, n_boot: int = 1000,
               seed: int = 0) -> dict:
    """{base, tuned, grader, overall: {delta, ci_low, ci_high, n, mean_a, mean_b}, by_category: {...}} from an
    eval report that ran both models on the suite; delta = tuned - base."""
    rows = [r for r in report["rows"] if grader in r["grades"]]
    if not rows or any(m not in rows[0]["grades"][grader] for m in (base, tuned)):
        raise UserError(f"the report has no '{grader}' scores for both '{base}' and '{tuned}': run the suite on both")

    def delta(subset: list[dict]) -> dict:
        a = [r["grades"][grader][base]["score"] for r in subset]
        b = [r["grades"][grader][tuned]["score"] for r in subset]
        return stats.paired_delta(a, b, n_boot=n_boot, seed=seed)

    categories = sorted({str(r.get("meta", {}).get("category")) for r in rows if r.get("meta", {}).get("category")})
    by_category = {c: delta([r for r in rows if r.get("meta", {}).get("category") == c]) for c in categories}
    return {"base": base, "tuned": tuned, "grader": grader, "overall": delta(rows), "by_category": by_category}
