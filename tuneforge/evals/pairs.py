"""Preference pairs from the platform's own signals, for DPO: which of two answers to one prompt is better.

Two sources, both pure (no store, no server: the platform's routes and jobs call these):

- an eval report (`pairs_from_report`): a pairwise judge's verdict where one model won in both orders, or a
  pointwise grader's scores where one model passed and the other did not;
- self-play (`sample` -> `grade` -> `pairs_from_samples`): k answers per prompt from the current model at a
  temperature, graded (`exact`, `json`, a criterion judge), a passing answer paired with a failing one. When
  none passes, the row's reference answer may stand in as the better one (off-policy but right; its lineage
  says so); when all pass there is nothing to learn from the prompt.

Every pair is an OpenAI preference row, `{"input": {"messages", "tools"?}, "preferred_output": [message],
"non_preferred_output": [message]}` (what `tuneforge.data.preference.normalized` accepts), with a lineage dict
saying where its two answers came from. Answers that errored, are empty, or say the same thing as each other
(exact's normalisation: `Output.canonical`) make no pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tuneforge.errors import UserError
from tuneforge.evals.graders.base import Grade, Grader, no_stop
from tuneforge.evals.outputs import Output, prompt_of, reference_of
from tuneforge.progress import Callback, Event, ignore

JUDGE = "judge"  # `by` for the pairwise judge's verdicts, whatever its label in the report
MAX_K = 16  # answers sampled per prompt


@dataclass
class Pair:
    """One preference row (OpenAI's shape) and where its answers came from."""

    row: dict[str, Any]
    lineage: dict[str, Any]


def message_of(output: Output) -> dict[str, Any]:
    """An answer as the assistant message a preference row holds (tool calls given ids, which rows need)."""
    message: dict[str, Any] = {"role": "assistant", "content": output.text or (None if output.tool_calls else "")}
    if output.tool_calls:
        message["tool_calls"] = [{"id": c.get("id") or f"call_{i}", "type": "function", "function": c["function"]}
                                 for i, c in enumerate(output.tool_calls)]
    return message


def preference_row(prompt: dict, preferred: Output, rejected: Output) -> dict[str, Any]:
    """The OpenAI preference row for a prompt (`{"messages", "tools"?}`) and its two answers."""
    inp: dict[str, Any] = {"messages": list(prompt["messages"])}
    if prompt.get("tools"):
        inp["tools"] = prompt["tools"]
    return {"input": inp, "preferred_output": [message_of(preferred)],
            "non_preferred_output": [message_of(rejected)]}


def usable(output: Output) -> bool:
    """An answer a pair may hold: no error, and some text or a tool call."""
    return not output.error and bool(output.text.strip() or output.tool_calls)


def _distinct(a: Output, b: Output) -> bool:
    return usable(a) and usable(b) and a.canonical() != b.canonical()


# --- from an eval report
def labels_of(report: dict) -> list[str]:
    """What `by` may name in this report: "judge" (when it has verdicts) and each pointwise grader's label."""
    rows = report.get("rows") or []
    graded = sorted({label for row in rows for label in row.get("grades", {})})
    judged = any(row.get("verdicts") for row in rows)
    return ([JUDGE] if judged else []) + [g for g in graded if g != JUDGE]


def pairs_from_report(report: dict, by: str = JUDGE, *, min_gap: float | None = None) -> list[Pair]:
    """Pairs from an eval report's rows (`evals/report.py`), decided `by` the pairwise judge ("judge": each
    verdict whose winner won in both orders) or by a pointwise grader's label (one model scores 1 and the other
    below; with `min_gap`, any two whose scores differ by at least that). Lineage: `{"row", "test_set", "by",
    "preferred", "rejected"}` (the models' names); the caller adds the run's id."""
    judge_label = (report.get("judge") or {}).get("label")
    if by not in labels_of(report) and by != judge_label:
        known = ", ".join(labels_of(report)) or "none: the report has no grades"
        raise UserError(f"by '{by}': this report's rows are decided by {known}", param="by")
    if min_gap is not None and not 0 < min_gap <= 1:
        raise UserError("min_gap must be above 0 and at most 1", param="min_gap")
    out = []
    for row in report.get("rows") or []:
        outputs = {m: Output.of(o) for m, o in row.get("outputs", {}).items()}
        if by in (JUDGE, judge_label) and by not in row.get("grades", {}):
            decided = _judged(row, by, judge_label)
        else:
            decided = _graded(row.get("grades", {}).get(by, {}), min_gap)
        for winner, loser in decided:
            if winner in outputs and loser in outputs and _distinct(outputs[winner], outputs[loser]):
                lineage = {"row": row.get("row"), "test_set": row.get("test_set"), "by": by,
                           "preferred": winner, "rejected": loser}
                out.append(Pair(preference_row(row["prompt"], outputs[winner], outputs[loser]), lineage))
    return out


def _judged(row: dict, by: str, judge_label: str | None) -> list[tuple[str, str]]:
    """(winner, loser) of each verdict won in both orders (the judge reports a tie otherwise)."""
    labels = {by, judge_label, None}
    return [(v["winner"], v["b"] if v["winner"] == v["a"] else v["a"]) for v in row.get("verdicts", [])
            if v.get("grader") in labels and v.get("winner") in (v.get("a"), v.get("b"))]


def _graded(scores: dict[str, dict], min_gap: float | None) -> list[tuple[str, str]]:
    """(better, worse) for every two models a grader told apart on this row."""
    out = []
    for a, b in itertools.combinations(scores, 2):
        sa, sb = scores[a].get("score"), scores[b].get("score")
        if sa is None or sb is None or sa == sb:
            continue
        (hi, shi), (lo, slo) = ((a, sa), (b, sb)) if sa > sb else ((b, sb), (a, sa))
        if (shi - slo >= min_gap) if min_gap is not None else (shi >= 1 > slo):
            out.append((hi, lo))
    return out


# --- self-play
def sample(generator: Any, prompts: Sequence[dict], *, k: int, temperature: float, max_tokens: int,
           seed: int = 0, top_p: float = 1.0, on_event: Callback = ignore) -> list[list[Output]]:
    """k answers to each prompt (`{"messages", "tools"?}`) from a loaded model (a `Generator`), sampled at a
    temperature. Answer j of every prompt is drawn with seed `seed + j` (repeatable whatever else is batched);
    the k draws run at once, so the engine batches all prompts x k together."""
    from tuneforge.evals.answerers import generator_answerer
    from tuneforge.evals.runner import Sampling

    if not 1 <= k <= MAX_K:
        raise UserError(f"k={k}: sample 1 to {MAX_K} answers per prompt", param="k")
    if not prompts:
        return []
    answer = generator_answerer(generator, batch_size=len(prompts))
    on_event(Event("start", f"sampling {k} answers to each of {len(prompts)} prompts", total=len(prompts) * k))

    def draw(j: int) -> list[Output]:
        params = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed + j)
        return list(answer(list(prompts), params))

    with ThreadPoolExecutor(max_workers=k) as pool:
        draws = list(pool.map(draw, range(k)))
    return [[draws[j][i] for j in range(k)] for i in range(len(prompts))]


def grade(grader: Grader, row: dict, samples: Sequence[Output], *,
          check: Callable[[], Any] = no_stop) -> list[Grade]:
    """Each sampled answer's grade against the row (its reference: the row's final assistant message)."""
    return grader.grade_many([(row, s) for s in samples], check=check)


def pairs_from_samples(row: dict, samples: Sequence[Output], grades: Sequence[Grade], *,
                       min_gap: float | None = None, use_reference: bool = True, per_prompt: int = 1) -> list[Pair]:
    """Pairs for one chat row from its graded samples: a passing answer (score 1; with `min_gap`, the best
    score) with a failing one (below 1; with `min_gap`, at least that far below the best), the worst failures
    first, texts distinct, at most `per_prompt` pairs. None pass: the row's reference answer, if
    `use_reference`, is preferred to the worst sample. All pass, or no grade applies: no pair.
    Lineage: `{"samples": [i, j], "grades": [gi, gj], "preferred": "sample" | "reference"}` (j's index and
    grade for the rejected answer; i None for the reference)."""
    scored = [(i, s, g.score) for i, (s, g) in enumerate(zip(samples, grades)) if g.score is not None and usable(s)]
    winners, losers = _split(scored, min_gap)
    winners, losers = _unique(winners), _unique(sorted(losers, key=lambda t: t[2]))
    prompt = prompt_of(row)
    if not winners:
        reference = reference_of(row)
        if not use_reference or reference is None or not losers:
            return []
        winners = [(None, reference, 1.0)]
    out: list[Pair] = []
    for (i, win, gi), (j, lose, gj) in zip(itertools.cycle(winners), losers):
        if len(out) == per_prompt:
            break
        if _distinct(win, lose):
            lineage = {"samples": [i, j], "grades": [gi, gj], "preferred": "sample" if i is not None else "reference"}
            out.append(Pair(preference_row(prompt, win, lose), lineage))
    return out


def _split(scored: list[tuple[int, Output, float]], min_gap: float | None) -> tuple[list, list]:
    """(passing, failing) samples. With `min_gap`: the best ones, and those at least that far below; when all
    are within the gap and none is right, all fail (only the reference can teach)."""
    if min_gap is None:
        return [t for t in scored if t[2] >= 1], [t for t in scored if t[2] < 1]
    best = max((t[2] for t in scored), default=0.0)
    losers = [t for t in scored if best - t[2] >= min_gap]
    if not losers and best < 1:
        return [], scored
    return [t for t in scored if t[2] == best], losers


def _unique(items: list[tuple[int, Output, float]]) -> list[tuple[int, Output, float]]:
    """The first of each distinct answer (exact's normalisation), order kept."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = item[1].canonical()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out
