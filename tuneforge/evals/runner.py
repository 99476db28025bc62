"""An eval run: test rows x models -> outputs (generated once, cached) -> graders and the pairwise judge -> a
report. Pure library: no database, no server; the `eval` job, the HTTP API and the CLI call `run_eval`.

Resumable by construction. Every generated answer is appended to `outputs.jsonl` in the work folder as its
batch finishes, keyed by sha256(model's cache id, prompt, sampling settings); every judge call to
`judgments.jsonl` as it returns, keyed by the exact request. A run over a folder that already has them
(a requeued, cancelled or crashed job) only generates and judges what is missing; pointwise graders that
call no model are cheap and simply run again. `check()` is called before every batch and every judge call
and raises to stop (the job's cancel); `on_event` gets `tuneforge.progress.Event`s.

A candidate is a model with an answer function (`answer(prompts, sampling) -> answers`, one per prompt;
a prompt is `{"messages": [...], "tools"?: [...]}`, an answer a string or an assistant message dict), or a
column of answers already in the rows, or the rows' own final assistant message (the reference, e.g. the
teacher's captured reply).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.validate import raise_if_invalid, validate_file
from tuneforge.errors import UserError
from tuneforge.evals.cache import JudgmentLog, OutputCache, key_of
from tuneforge.evals.graders.base import Grade, Grader, no_stop
from tuneforge.evals.graders.judge import PairTask, PairVerdict, PairwiseJudge
from tuneforge.evals.outputs import Output, prompt_of, reference_of
from tuneforge.progress import Callback, Event, ignore


@dataclass(frozen=True)
class Sampling:
    """How a candidate generates: part of the output cache key."""

    max_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None


AnswerFn = Callable[[list[dict], Sampling], Sequence[Any]]


@dataclass
class Candidate:
    """A model under evaluation. Exactly one source: `answer` (generate), `column`, or `reference`."""

    name: str
    answer: AnswerFn | None = None
    column: str | None = None
    reference: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    cache_id: str | None = None  # identifies the model in the cache key (default: name); e.g. add a checksum
    batch_size: int = 16

    def __post_init__(self) -> None:
        if sum([self.answer is not None, self.column is not None, self.reference]) != 1:
            raise UserError(f"model '{self.name}': give exactly one of an answer function, a column, or reference")

    @property
    def source(self) -> str:
        return "generate" if self.answer is not None else "column" if self.column is not None else "reference"

    def describe(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "source": self.source}
        if self.answer is not None:
            out["sampling"] = asdict(self.sampling)
        if self.column is not None:
            out["column"] = self.column
        return out


@dataclass
class TestSet:
    """Rows from one dataset (several test sets in a run weigh equally in the Bradley-Terry ratings)."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    rows: list[dict]


@dataclass
class RunResult:
    """Everything a run produced, before statistics: what `report.build_report` turns into the report."""

    test_sets: list[TestSet]
    candidates: list[Candidate]
    rows: list[tuple[str, int, dict]]  # (test set, row index in it, row)
    outputs: dict[str, list[Output]]
    grades: dict[str, dict[str, list[Grade]]]  # grader label -> model -> one grade per row
    graders: dict[str, dict]  # grader label -> its description (+ what prepare() returned)
    verdicts: dict[tuple[str, str], list[PairVerdict]] = field(default_factory=dict)
    judge: dict | None = None
    work: dict = field(default_factory=dict)  # new generations / judge calls made by this run


def load_rows(path: str | Path) -> list[dict]:
    """A test set file: OpenAI chat JSONL; extra top-level fields (answer columns, metadata) are kept."""
    report = validate_file(path, prompts=True)
    raise_if_invalid(report)
    return [row for _line, row in report.rows]


def run_eval(test_sets: Sequence[TestSet] | list[dict], candidates: Sequence[Candidate], *,
             graders: Sequence[Grader] = (), judge: PairwiseJudge | None = None,
             pairs: Sequence[tuple[str, str]] | None = None, workdir: str | Path | None = None,
             on_event: Callback = ignore, check: Callable[[], Any] = no_stop, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """Generate what is missing, grade, judge, and return the report dict (see `report.build_report`)."""
    from tuneforge.evals.report import build_report

    result = collect(test_sets, candidates, graders=graders, judge=judge, pairs=pairs, workdir=workdir,
                     on_event=on_event, check=check)
    on_event(Event("message", "computing statistics"))
    report = build_report(result, n_boot=n_boot, seed=seed)
    on_event(Event("done", "eval finished"))
    return report


def collect(test_sets: Sequence[TestSet] | list[dict], candidates: Sequence[Candidate], *,
            graders: Sequence[Grader] = (), judge: PairwiseJudge | None = None,
            pairs: Sequence[tuple[str, str]] | None = None, workdir: str | Path | None = None,
            on_event: Callback = ignore, check: Callable[[], Any] = no_stop) -> RunResult:
    """The run without the statistics: outputs, grades and verdicts for every row."""
    sets = _as_test_sets(test_sets)
    _check_names(candidates, graders, judge)
    folder = Path(workdir) if workdir is not None else None
    cache = OutputCache(folder / "outputs.jsonl" if folder else None)
    log = JudgmentLog(folder / "judgments.jsonl" if folder else None)
    rows = [(s.name, i, row) for s in sets for i, row in enumerate(s.rows)]
    plain = [row for _s, _i, row in rows]
    outputs = {c.name: _outputs(c, plain, cache, on_event, check) for c in candidates}
    result = RunResult(sets, list(candidates), rows, outputs, {}, {})
    for grader in graders:
        grader.bind(log)
        info = grader.prepare(check=check, on_event=on_event)
        result.graders[grader.label] = grader.describe() | (info or {})
        result.grades[grader.label] = _grade(grader, plain, outputs, on_event, check)
    if judge is not None:
        judge.bind(log)
        chosen = list(pairs) if pairs is not None else list(itertools.combinations([c.name for c in candidates], 2))
        result.verdicts = _judge(judge, plain, outputs, chosen, on_event, check)
        result.judge = judge.describe()
    result.work = {"generated": cache.added, "judge_calls": log.added}
    return result


def _as_test_sets(test_sets: Sequence[TestSet] | list[dict]) -> list[TestSet]:
    if test_sets and isinstance(test_sets[0], dict):
        return [TestSet("test", list(test_sets))]  # type: ignore[arg-type]
    return list(test_sets)  # type: ignore[arg-type]


def _check_names(candidates: Sequence[Candidate], graders: Sequence[Grader], judge: PairwiseJudge | None) -> None:
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise UserError(f"two models share a name in {names}: give each a distinct name")
    labels = [g.label for g in graders] + ([judge.label] if judge else [])
    if len(set(labels)) != len(labels):
        raise UserError(f"two graders share a name in {labels}: give one of them a `label`")
    if any(g.pairwise for g in graders):
        raise UserError("the pairwise judge is passed as judge=, not among the pointwise graders")


def _outputs(c: Candidate, rows: list[dict], cache: OutputCache, on_event: Callback,
             check: Callable[[], Any]) -> list[Output]:
    if c.reference:
        return [reference_of(row) or Output(error="the row has no final assistant message") for row in rows]
    if c.column is not None:
        missing = [i + 1 for i, row in enumerate(rows) if c.column not in row]
        if missing:
            raise UserError(f"model '{c.name}': rows {missing[:5]} have no '{c.column}' field (the answer column)")
        return [_column_answer(c, row, i) for i, row in enumerate(rows, 1)]
    return _generate(c, [prompt_of(row) for row in rows], cache, on_event, check)


def _column_answer(c: Candidate, row: dict, n: int) -> Output:
    try:
        return Output.of(row[c.column])
    except (TypeError, AttributeError) as exc:
        raise UserError(f"model '{c.name}': row {n}: {exc}") from None


def _generate(c: Candidate, prompts: list[dict], cache: OutputCache, on_event: Callback,
              check: Callable[[], Any]) -> list[Output]:
    settings = asdict(c.sampling)
    keys = [key_of("output", c.cache_id or c.name, p, settings) for p in prompts]
    todo = list({k: p for k, p in zip(keys, prompts) if k not in cache}.items())
    on_event(Event("start", f"generating with {c.name} ({len(prompts) - len(todo)} cached)", total=len(todo)))
    for start in range(0, len(todo), c.batch_size):
        check()
        batch = todo[start : start + c.batch_size]
        answers = list(c.answer([p for _k, p in batch], c.sampling))  # type: ignore[misc]
        if len(answers) != len(batch):
            raise RuntimeError(f"model '{c.name}' gave {len(answers)} answers to {len(batch)} prompts")
        now = time.time()
        cache.add(*({"key": k, "model": c.name, "output": Output.of(a).to_dict(), "time": now}
                    for (k, _p), a in zip(batch, answers)))
        on_event(Event("progress", f"generating with {c.name}", step=start + len(batch), total=len(todo)))
    return [Output.of(cache.get(k)["output"]) for k in keys]  # type: ignore[index]


def _grade(grader: Grader, rows: list[dict], outputs: dict[str, list[Output]], on_event: Callback,
           check: Callable[[], Any]) -> dict[str, list[Grade]]:
    on_event(Event("start", f"grading: {grader.label}", total=len(outputs) * len(rows)))
    grades = {}
    for n, (model, outs) in enumerate(outputs.items()):
        grades[model] = grader.grade_many(list(zip(rows, outs)), check=check)
        on_event(Event("progress", f"grading: {grader.label}", step=(n + 1) * len(rows),
                       total=len(outputs) * len(rows)))
    return grades


def _judge(judge: PairwiseJudge, rows: list[dict], outputs: dict[str, list[Output]],
           pairs: list[tuple[str, str]], on_event: Callback,
           check: Callable[[], Any]) -> dict[tuple[str, str], list[PairVerdict]]:
    for a, b in pairs:
        if a not in outputs or b not in outputs or a == b:
            raise UserError(f"cannot judge the pair ({a}, {b}): both must be distinct models of the run "
                            f"({', '.join(outputs)})")
    tasks = [PairTask(row, a, b, outputs[a][i], outputs[b][i]) for a, b in pairs for i, row in enumerate(rows)]
    on_event(Event("start", f"judging {len(tasks)} pairs in both orders with {judge.client.model}"))

    def progress(done: int, total: int) -> None:
        if done == total or done % 8 == 0:
            on_event(Event("progress", "judging", step=done, total=total))

    verdicts = judge.judge_many(tasks, check=check, on_done=progress)
    out: dict[tuple[str, str], list[PairVerdict]] = {}
    for task, verdict in zip(tasks, verdicts):
        out.setdefault((task.a, task.b), []).append(verdict)
    return out
