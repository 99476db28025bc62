"""The bake-off's arithmetic, as OpenPipe ranked bases for its merged model: every base is fine-tuned on every
task, and each task's eval report gives games between the bases (through their fine-tunes). A game is a row
and a pair of entrants: the pairwise judge's verdict where there is a judge, else the first grader's scores
(higher wins, equal ties). Bradley-Terry over the games of all tasks, each task weighted equally, ranks the
bases, with intervals from refits on rows resampled within each task.

Pure functions of the eval reports: the job (`tuneforge.jobs.bakeoff`) runs the fine-tunes and evals.
"""

from __future__ import annotations

import itertools
import json
from html import escape
from pathlib import Path

from tuneforge.evals import stats


def games(report: dict, entrants: dict[str, str], task: str) -> list[tuple[str, str, float, str]]:
    """(a, b, a's outcome, task) for every row and pair of entrants in one eval report; `entrants` maps the
    models in the report to the entrants they stand for (a fine-tune -> its base)."""
    out = []
    judged = bool(report.get("judge"))
    label = next(iter(report.get("graders", {})), None)
    for row in report["rows"]:
        if judged:
            for v in row["verdicts"]:
                if v["a"] in entrants and v["b"] in entrants:
                    outcome = 1.0 if v["winner"] == v["a"] else 0.0 if v["winner"] == v["b"] else 0.5
                    out.append((entrants[v["a"]], entrants[v["b"]], outcome, task))
        elif label is not None:
            grades = row["grades"].get(label, {})
            for a, b in itertools.combinations([m for m in entrants if m in grades], 2):
                x, y = grades[a]["score"], grades[b]["score"]
                if x is not None and y is not None:
                    out.append((entrants[a], entrants[b], 1.0 if x > y else 0.5 if x == y else 0.0, task))
    return out


def rank(all_games: list[tuple], names: list[str], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """[{name, rating, ci_low, ci_high}], best first: Bradley-Terry over every task's games, tasks weighted
    equally."""
    return stats.bradley_terry_ci(all_games, names, n_boot=n_boot, seed=seed)


def win_rates(task_games: list[tuple], names: list[str]) -> dict[str, dict]:
    """Each entrant's win rate against all the others on one task (a tie counts half), with its interval."""
    out = {}
    for name in names:
        outcomes = [g[2] if g[0] == name else 1 - g[2] for g in task_games if name in g[:2]]
        out[name] = stats.paired_win_rate(outcomes) if outcomes else None
    return out


def scores(report: dict, entrants: dict[str, str]) -> dict[str, dict]:
    """Each entrant's pointwise grader means on one task: {entrant: {grader: {mean, ci_low, ci_high}}}."""
    return {entrants[m["name"]]: m["graders"] for m in report["models"] if m["name"] in entrants}


def task_section(report: dict, entrants: dict[str, str], task: str, run_id: str) -> dict:
    found = games(report, entrants, task)
    names = list(dict.fromkeys(entrants.values()))
    return {"task": task, "eval_run": run_id, "games": len(found), "win_rates": win_rates(found, names),
            "scores": scores(report, entrants), "models": {v: k for k, v in entrants.items()}}


def write(report: dict, folder: Path) -> tuple[Path, Path]:
    """report.json and report.html in the folder (each written whole, then renamed into place)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "report.json", folder / "report.html"
    for path, text in zip(paths, (json.dumps(report, indent=2), render(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.rename(path)
    return paths


# --- HTML: one self-contained page, like the eval report's
def render(report: dict) -> str:
    from tuneforge.evals.report_html import CSS, interval_chart

    parts = [f"<h1>Bake-off {escape(report['id'])}</h1>", _setup(report),
             "<h2>Ranking of the bases</h2><p class='muted'>Bradley-Terry ratings (Elo-like scale, mean 1000) over "
             "every task's games, tasks weighted equally, with 95% bootstrap intervals.</p>",
             interval_chart(report["ranking"]), _tasks(report["tasks"], [r["name"] for r in report["ranking"]])]
    merge = report.get("merge")
    if merge:
        parts.append(_merge(merge, interval_chart))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Bake-off {escape(report['id'])}"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def _setup(report: dict) -> str:
    items = [("bases", ", ".join(report["bases"])), ("tasks", ", ".join(_task_name(t) for t in report["tasks"])),
             ("judge", report.get("judge") or "none (graders decide the games)"),
             ("reference", report.get("reference") or "none"),
             ("training budget", f"{report['budget_tokens']:,} tokens" if report.get("budget_tokens") else "epochs")]
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in items) + "</table>"


def _tasks(tasks: list[dict], order: list[str]) -> str:
    head = "".join(f"<th>{escape(_task_name(t))}</th>" for t in tasks)
    body = []
    for name in order:
        cells = []
        for t in tasks:
            w = t["win_rates"].get(name)
            grade = next(iter((t["scores"].get(name) or {}).values()), None)
            text = "–" if w is None else f"{w['win_rate']:.2f} [{w['ci_low']:.2f}, {w['ci_high']:.2f}]"
            if grade and grade.get("mean") is not None:
                text += f" <span class='muted'>score {grade['mean']:.2f}</span>"
            cells.append(f"<td class='num'>{text}</td>")
        body.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    return ("<h2>Per task</h2><p class='muted'>Win rate against the other entrants on the task's test rows [95% CI], "
            "and the first grader's mean score.</p>"
            f"<table><tr><th>entrant</th>{head}</tr>{''.join(body)}</table>")


def _task_name(task: dict) -> str:
    return f"{task['name']} ({task['task']})" if task.get("name") else task["task"]


def _merge(merge: dict, chart) -> str:
    if merge.get("skipped"):
        return f"<h2>Merge</h2><p>{escape(merge['skipped'])}</p>"
    place = merge.get("place")
    text = (f"<h2>The merge</h2><p>{escape(merge['model'])}: SLERP of {escape(' and '.join(merge['of']))}, fine-tuned "
            f"and evaluated like the bases. It places <b>{place} of {len(merge['ranking'])}</b>.</p>")
    return text + chart(merge["ranking"]) + _tasks(merge["tasks"], [r["name"] for r in merge["ranking"]])
