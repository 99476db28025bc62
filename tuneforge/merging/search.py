"""Merge search: a merge's parameters (SLERP's `t` per layer group, TIES' densities and weights, ...) chosen by
measurement. A mergekit config holds placeholders (a value written `$name`) and each has a list of values to
try; every candidate is merged by mergekit and scored by a fast eval on held-out rows of every target task
(tasks weighted equally); the best is kept and the curve reported.

Strategies: `grid` tries every combination (a seeded sample of them when there are more than `trials`);
`coordinate` tunes one placeholder at a time over its values, the others held at the best so far, sweeping
until a sweep improves nothing or `trials` run out: the sum of the lists' lengths per sweep, not their product.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.progress import Callback, Event, ignore

STRATEGIES = ("grid", "coordinate")
MAX_TRIALS = 200


@dataclass
class Trial:
    n: int
    values: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)  # task -> the grader's mean

    @property
    def score(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else float("-inf")


def parse_space(items: list[str]) -> dict[str, list[float]]:
    """`NAME=0,0.5,1` or `NAME=LOW:HIGH:COUNT` (evenly spaced, ends included) per placeholder."""
    space: dict[str, list[float]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        try:
            if ":" in spec:
                low, high, count = spec.split(":")
                n = int(count)
                values = [float(low) + (float(high) - float(low)) * i / max(1, n - 1) for i in range(n)]
            else:
                values = [float(v) for v in spec.split(",")]
        except ValueError:
            values = []
        if not sep or not name or not values:
            raise UserError(f"--param {item}: give NAME=v1,v2,... or NAME=LOW:HIGH:COUNT, e.g. t_attn=0:1:5")
        space[name.strip()] = [round(v, 6) for v in values]
    return space


def placeholders(cfg: Any) -> set[str]:
    """The names written `$name` anywhere in the config."""
    if isinstance(cfg, str) and cfg.startswith("$"):
        return {cfg[1:]}
    if isinstance(cfg, dict):
        return set().union(*map(placeholders, cfg.values())) if cfg else set()
    if isinstance(cfg, list):
        return set().union(*map(placeholders, cfg)) if cfg else set()
    return set()


def fill(cfg: Any, values: dict[str, float]) -> Any:
    """A copy of the config with each `$name` replaced by its value."""
    if isinstance(cfg, str) and cfg.startswith("$"):
        return values[cfg[1:]]
    if isinstance(cfg, dict):
        return {k: fill(v, values) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [fill(v, values) for v in cfg]
    return copy.deepcopy(cfg)


def check_space(cfg: dict, space: dict[str, list[float]], strategy: str, trials: int) -> None:
    wanted, given = placeholders(cfg), set(space)
    if wanted != given:
        raise UserError(f"the config's placeholders ({', '.join(sorted(wanted)) or 'none'}) and the --param names "
                        f"({', '.join(sorted(given)) or 'none'}) differ: give one --param per $name in the config")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    if not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials is 1 to {MAX_TRIALS}")


Score = Callable[[int, dict[str, float]], dict[str, float]]  # (trial number, values) -> task -> score


def run(space: dict[str, list[float]], score: Score, *, strategy: str = "grid", trials: int = 16, seed: int = 0,
        on_event: Callback = ignore) -> list[Trial]:
    """Every trial in the order run (the strategy decides what to try next from the scores so far)."""
    done: list[Trial] = []
    seen: dict[tuple, Trial] = {}
    plan = _grid(space, trials, seed) if strategy == "grid" else _coordinate(space, done, seen)
    total = min(trials, _count(space)) if strategy == "grid" else trials
    on_event(Event("start", "merge search", total=total))
    for values in plan:
        if len(done) >= trials:
            break
        trial = Trial(len(done) + 1, values, score(len(done) + 1, values))
        done.append(trial)
        seen[_key(values)] = trial
        best = max(done, key=lambda t: t.score)
        on_event(Event("progress", "merge search", step=len(done), total=total,
                       metrics={"score": trial.score, "best": best.score}))
    return done


def _count(space: dict[str, list[float]]) -> int:
    n = 1
    for values in space.values():
        n *= len(values)
    return n


def _key(values: dict[str, float]) -> tuple:
    return tuple(sorted(values.items()))


def _grid(space: dict[str, list[float]], trials: int, seed: int) -> Iterator[dict[str, float]]:
    names = list(space)
    combos = list(itertools.product(*(space[n] for n in names)))
    if len(combos) > trials:
        combos = random.Random(seed).sample(combos, trials)
    for combo in combos:
        yield dict(zip(names, combo))


def _coordinate(space: dict[str, list[float]], done: list[Trial], seen: dict[tuple, Trial]) -> Iterator[dict]:
    """Start at each list's middle value; sweep the placeholders one by one; stop when a sweep finds nothing
    better (values already tried are not tried again)."""
    current = {n: v[len(v) // 2] for n, v in space.items()}
    yield dict(current)
    while True:
        before = max(done, key=lambda t: t.score).score
        for name, values in space.items():
            for v in values:
                candidate = {**current, name: v}
                if _key(candidate) not in seen:
                    yield candidate
            current = dict(max((t for t in done if all(t.values[k] == current[k] for k in current if k != name)),
                               key=lambda t: t.score).values)
        if max(done, key=lambda t: t.score).score <= before:
            return


# --- the real scorer: merge a candidate, then a fast eval of it on every task
@dataclass
class Search:
    """What `tuneforge merge-search` runs: the config, the tasks, the grader, and where trials go."""

    config: dict
    tasks: dict[str, list[dict]]  # task name -> held-out rows
    workdir: Path
    grader: dict = field(default_factory=lambda: {"type": "exact", "name": "exact"})
    max_tokens: int | None = None
    locate: Any = None
    check: Callable[[], None] = lambda: None
    best: tuple[float, Path] | None = None

    def score(self, n: int, values: dict[str, float]) -> dict[str, float]:
        from tuneforge.evals.execute import SamplingSpec, execute
        from tuneforge.evals.models import Models
        from tuneforge.evals.runner import TestSet
        from tuneforge.merging.full import merge
        from tuneforge.models import registry

        folder = self.workdir / f"trial-{n:03d}"
        shutil.rmtree(folder, ignore_errors=True)
        merge(fill(self.config, values), folder, locate=self.locate or registry.resolve, check=self.check,
              source=f"trial {n}")
        scores = {}
        models = Models()
        for task, rows in self.tasks.items():
            report = execute([TestSet(task, rows)], models, [str(folder)], [self.grader],
                             workdir=self.workdir / f"eval-{n:03d}-{task}", check=self.check,
                             sampling=SamplingSpec(max_completion_tokens=self.max_tokens))
            scores[task] = next(iter(report["models"][0]["graders"].values()))["mean"] or 0.0
        del models
        self._keep_best(sum(scores.values()) / len(scores), folder)
        return scores

    def _keep_best(self, score: float, folder: Path) -> None:
        if self.best is None or score > self.best[0]:
            if self.best is not None:
                shutil.rmtree(self.best[1], ignore_errors=True)
            self.best = (score, folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def report(trials: list[Trial], space: dict[str, list[float]], *, strategy: str, config: dict) -> dict:
    best = max(trials, key=lambda t: t.score)
    running, curve = float("-inf"), []
    for t in trials:
        running = max(running, t.score)
        curve.append({"trial": t.n, "score": t.score, "best": running})
    return {"strategy": strategy, "space": space, "config": config, "best": {"trial": best.n, "values": best.values,
            "score": best.score, "scores": best.scores}, "trials": [{"trial": t.n, "values": t.values,
                                                                     "scores": t.scores, "score": t.score}
                                                                    for t in trials], "curve": curve}


def write_report(rep: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_text(json.dumps(rep, indent=2))
    (folder / "search.html").write_text(render(rep))


def render(rep: dict) -> str:
    from tuneforge.evals.report_html import CSS

    names = list(rep["space"])
    tasks = list(rep["best"]["scores"])
    head = "".join(f"<th>{escape(n)}</th>" for n in names) + "".join(f"<th>{escape(t)}</th>" for t in tasks)
    rows = "".join(
        f"<tr{' class=win' if t['trial'] == rep['best']['trial'] else ''}><td>{t['trial']}</td>"
        + "".join(f"<td class='num'>{t['values'][n]:g}</td>" for n in names)
        + "".join(f"<td class='num'>{t['scores'].get(k, 0):.3f}</td>" for k in tasks)
        + f"<td class='num'>{t['score']:.3f}</td></tr>" for t in rep["trials"])
    best = rep["best"]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Merge search</title><style>{CSS}"
            f"</style></head><body><h1>Merge search ({escape(rep['strategy'])})</h1><p>Best: trial {best['trial']}, "
            f"{escape(json.dumps(best['values']))}, score <b>{best['score']:.3f}</b> (mean over tasks).</p>"
            f"<h2>Curve</h2>{_curve(rep['curve'])}<h2>Trials</h2><table><tr><th>trial</th>{head}<th>score</th></tr>"
            f"{rows}</table></body></html>")


def _curve(curve: list[dict]) -> str:
    """Each trial's score (dots) and the best so far (line), as inline SVG."""
    width, height, pad = 560, 220, 36
    n = max(1, len(curve) - 1)
    values = [c["score"] for c in curve]
    lo, hi = min(values + [0.0]), max(values + [1.0])

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i / n * (width - 2 * pad), height - pad - (v - lo) / ((hi - lo) or 1) * (height - 2 * pad)

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, c["best"]) for i, c in enumerate(curve)))
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='#2f6fb3'/>"
                   for x, y in (xy(i, c["score"]) for i, c in enumerate(curve)))
    axes = (f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#999'/>"
            f"<text x='{width / 2}' y='{height - 6}' text-anchor='middle'>trial</text>"
            f"<text x='4' y='{pad - 8}'>score {hi:.2f}</text><text x='4' y='{height - pad}'>{lo:.2f}</text>")
    return (f"<svg width='{width}' height='{height}' role='img' aria-label='score by trial, and the best so far'>"
            f"{axes}<polyline points='{line}' fill='none' stroke='#116329' stroke-width='2'/>{dots}</svg>")
