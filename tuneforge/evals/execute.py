"""One eval run from names: models, criteria and test sets in, report files out. The CLI (a run on this
machine) and the `eval` job (a run on a worker) both call `execute`, so they behave the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tuneforge.errors import UserError
from tuneforge.evals import criteria as criteria_
from tuneforge.evals import graders, suite
from tuneforge.evals.exact import reference_answer
from tuneforge.evals.graders.base import no_stop
from tuneforge.evals.models import Models
from tuneforge.evals.report import write_report
from tuneforge.evals.runner import Sampling, TestSet, run_eval
from tuneforge.progress import Callback, ignore


class SamplingSpec(BaseModel):
    """How the models under evaluation generate (OpenAI's run `sampling_params`)."""

    max_completion_tokens: int | None = Field(None, ge=1, le=4096, description="Longest answer; default: a "
                                              "margin over the longest reference answer.")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy (the default: repeatable outputs).")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)


def answer_budget(rows: Sequence[dict]) -> int:
    """Tokens to allow an answer when none is set: a margin over the longest reference (about 3 characters a
    token; a long ramble cannot be right, and on a CPU every extra token costs)."""
    longest = 0
    for row in rows:
        try:
            longest = max(longest, len(reference_answer(row)))
        except ValueError:
            continue
    return min(1024, max(32, int(longest / 3 * 1.25) + 16))


def pairs_for(models: Sequence[str], reference: str | None) -> list[tuple[str, str]]:
    """Head-to-head pairs: every model against the reference model, or every pair when there is none."""
    if reference is None:
        return list(itertools.combinations(models, 2))
    if reference not in models:
        raise UserError(f"reference model '{reference}' is not one of the models evaluated", param="reference")
    return [(m, reference) for m in models if m != reference]


def execute(test_sets: Sequence[TestSet], models: Models, names: Sequence[str], criteria: list[dict[str, Any]],
            *, reference: str | None = None, sampling: SamplingSpec | None = None, workdir: str | Path,
            on_event: Callback = ignore, check: Callable[[], Any] = no_stop, forgetting: bool = False) -> dict:
    """Run the eval into `workdir` (outputs and judgments cached there, report.json and report.html written).
    `forgetting`: the rows are a bundled suite, and the first two models a base and its fine-tune: the report
    adds the fine-tune's score minus the base's, with its CI."""
    sampling = sampling or SamplingSpec()
    rows = [row for t in test_sets for row in t.rows]
    budget = sampling.max_completion_tokens or answer_budget(rows)
    s = Sampling(max_tokens=budget, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed)
    candidates = [models.candidate(name, s) for name in names]
    pointwise, judge = [], None
    for raw in criteria:
        c = criteria_.parse(raw)
        deps = {"client": models.chat_client(c.model)} if c.model else {}
        grader = graders.make(c.spec, **deps)
        if c.pairwise:
            judge = grader
        else:
            pointwise.append(grader)
    pairs = pairs_for(list(names), reference) if judge is not None else None
    if judge is not None and not pairs:
        raise UserError("the pairwise judge needs at least two models", param="models")
    report = run_eval(list(test_sets), candidates, graders=pointwise, judge=judge, pairs=pairs, workdir=workdir,
                      on_event=on_event, check=check)
    if forgetting and len(names) >= 2 and suite.SUITE_GRADER in report["graders"]:
        report["forgetting"] = suite.forgetting(report, names[0], names[1])
    write_report(report, workdir)
    return report
