"""The eval report: a run's outputs, grades and verdicts turned into the JSON people and programs read, and
written beside its HTML page.

Shape (every number a float or null, every CI a 95% percentile bootstrap):

    {"version": 1, "created": <unix time>,
     "test_sets": [{"name", "rows"}],
     "models": [{"name", "source", "sampling"?, "column"?, "graders": {<label>: {"mean", "ci_low", "ci_high", "n"}}}],
     "graders": {<label>: {"kind", <options>..., "alignment"?: {...}}},
     "pairwise": [{"a", "b", "grader", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high", "n",
                   score graders: "delta", "delta_ci_low", "delta_ci_high";
                   the judge: "position_consistency", "identical"}],
     "ratings": [{"grader", "name", "rating", "ci_low", "ci_high"}],
     "judge": null | {"label", "model", "prompt_version", "criteria", "position_consistency", "pairs_judged",
                      "identical", "invalid_verdicts"},
     "work": {"generated", "judge_calls"},
     "rows": [{"index", "test_set", "row", "prompt", "meta" (the row's other fields), "reference",
               "outputs": {<model>: {"text", "tool_calls"?, "error"?}},
               "grades": {<label>: {<model>: {"score", "detail"}}},
               "verdicts": [{"a", "b", "grader", "winner", "identical", "consistent",
                             "judgments": [{"shown_first", "verdict", "winner", "explanation", "raw",
                                            "judge_model", "prompt_version"}]}]}]}

`win_rate` is a's: (wins + ties / 2) / n over rows, a's wins being rows where a's score is higher (score
graders) or the judge's verdict (judge). `delta` is b's mean minus a's over the rows both have.
Means pool all rows; ratings weigh each test set equally.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from tuneforge.evals import stats
from tuneforge.evals.graders.judge import PairVerdict, position_consistency
from tuneforge.evals.outputs import prompt_of, reference_of
from tuneforge.evals.runner import RunResult

VERSION = 1


def build_report(result: RunResult, *, n_boot: int = 1000, seed: int = 0) -> dict:
    names = [c.name for c in result.candidates]
    models = []
    for c in result.candidates:
        scores = {label: stats.mean_ci([g.score for g in by_model[c.name]], n_boot=n_boot, seed=seed)
                  for label, by_model in result.grades.items()}
        models.append(c.describe() | {"graders": scores})
    return {
        "version": VERSION, "created": time.time(),
        "test_sets": [{"name": s.name, "rows": len(s.rows)} for s in result.test_sets],
        "models": models, "graders": result.graders,
        "pairwise": _score_pairs(result, names, n_boot, seed) + _judge_pairs(result, n_boot, seed),
        "ratings": _ratings(result, names, n_boot, seed),
        "judge": _judge_summary(result), "work": result.work, "rows": _rows(result),
    }


def _score_pairs(result: RunResult, names: list[str], n_boot: int, seed: int) -> list[dict]:
    out = []
    for label, by_model in result.grades.items():
        for a, b in itertools.combinations(names, 2):
            sa, sb = [g.score for g in by_model[a]], [g.score for g in by_model[b]]
            rate = stats.paired_win_rate(stats.outcomes_from_scores(sa, sb), n_boot=n_boot, seed=seed)
            delta = stats.paired_delta(sa, sb, n_boot=n_boot, seed=seed)
            out.append({"a": a, "b": b, "grader": label, **rate, "delta": delta["delta"],
                        "delta_ci_low": delta["ci_low"], "delta_ci_high": delta["ci_high"]})
    return out


def _judge_pairs(result: RunResult, n_boot: int, seed: int) -> list[dict]:
    if result.judge is None:
        return []
    label = result.judge.get("label") or result.judge["kind"]
    out = []
    for (a, b), verdicts in result.verdicts.items():
        rate = stats.paired_win_rate([v.outcome for v in verdicts], n_boot=n_boot, seed=seed)
        out.append({"a": a, "b": b, "grader": label, **rate,
                    "position_consistency": position_consistency(verdicts),
                    "identical": sum(v.identical for v in verdicts)})
    return out


def _battles(result: RunResult, names: list[str]) -> dict[str, list[tuple]]:
    """Per grader label: (a, b, a's outcome, test set) for every row of every pair."""
    sets = [s for s, _i, _row in result.rows]
    out: dict[str, list[tuple]] = {}
    for label, by_model in result.grades.items():
        out[label] = [(a, b, 1.0 if x > y else 0.5 if x == y else 0.0, sets[i])
                      for a, b in itertools.combinations(names, 2)
                      for i, (x, y) in enumerate(zip((g.score for g in by_model[a]), (g.score for g in by_model[b])))
                      if x is not None and y is not None]
    if result.judge is not None:
        label = result.judge.get("label") or result.judge["kind"]
        out[label] = [(a, b, v.outcome, sets[i]) for (a, b), verdicts in result.verdicts.items()
                      for i, v in enumerate(verdicts)]
    return out


def _ratings(result: RunResult, names: list[str], n_boot: int, seed: int) -> list[dict]:
    if len(names) < 2:
        return []
    out = []
    for label, battles in _battles(result, names).items():
        if battles:
            fitted = stats.bradley_terry_ci(battles, names, n_boot=n_boot, seed=seed)
            out += [{"grader": label, **r} for r in fitted]
    return out


def _judge_summary(result: RunResult) -> dict | None:
    if result.judge is None:
        return None
    verdicts: list[PairVerdict] = [v for vs in result.verdicts.values() for v in vs]
    invalid = sum(1 for v in verdicts for j in v.judgments if j["verdict"] == "invalid")
    return {"label": result.judge.get("label") or result.judge["kind"], "model": result.judge["model"],
            "prompt_version": result.judge["prompt_version"], "criteria": result.judge.get("criteria"),
            "position_consistency": position_consistency(verdicts),
            "pairs_judged": sum(1 for v in verdicts if not v.identical),
            "identical": sum(1 for v in verdicts if v.identical), "invalid_verdicts": invalid}


def _rows(result: RunResult) -> list[dict]:
    label = (result.judge.get("label") or result.judge["kind"]) if result.judge else None
    skip = {"messages", "tools", "parallel_tool_calls", "functions"} | {c.column for c in result.candidates}
    rows = []
    for n, (test_set, index, row) in enumerate(result.rows):
        reference = reference_of(row)
        rows.append({
            "index": n, "test_set": test_set, "row": index, "prompt": prompt_of(row),
            "meta": {k: v for k, v in row.items() if k not in skip},
            "reference": reference.to_dict() if reference else None,
            "outputs": {m: outs[n].to_dict() for m, outs in result.outputs.items()},
            "grades": {g: {m: grades[n].to_dict() for m, grades in by_model.items()}
                       for g, by_model in result.grades.items()},
            "verdicts": [{"grader": label, **vs[n].to_dict()} for vs in result.verdicts.values()],
        })
    return rows


def write_report(report: dict, folder: str | Path) -> tuple[Path, Path]:
    """report.json and report.html in folder (written to a temporary name, then renamed)."""
    from tuneforge.evals.report_html import render

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "report.json", folder / "report.html"
    for path, text in zip(paths, (json.dumps(report, indent=1, ensure_ascii=False), render(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return paths
