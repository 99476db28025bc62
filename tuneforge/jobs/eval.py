"""The eval job: one run of an eval (OpenAI's `eval.run`): test rows x models -> outputs -> graders -> report.

Accepted from `POST /v1/evals/{id}/runs`. The rows are copied into the job's folder when the run is created
(a file deleted or a dataset changed later does not change the run), the models and judges are checked then,
and the eval's criteria are copied into the spec. The worker runs `tuneforge.evals.execute` over the job's
folder, where outputs and judgments are cached as they are made: a requeued run (its worker died) or a rerun
only generates and judges what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session

from tuneforge.data.validate import validate_file
from tuneforge.errors import UserError
from tuneforge.evals import graders, suite
from tuneforge.evals.execute import SamplingSpec, execute, pairs_for
from tuneforge.evals.models import COLUMN, Local, Models
from tuneforge.evals.runner import TestSet
from tuneforge.jobs.context import JobContext, ProgressEvents, load_rows, save_rows
from tuneforge.jobs.registry import JobKind
from tuneforge.store import datasets, evals, files, jobs, models
from tuneforge.store.db import Database
from tuneforge.store.tables import Eval, Job, Project

MAX_ROWS = 5000
MAX_MODELS = 8
MAX_GENERATIONS = 20_000  # rows x models
MAX_JUDGE_CALLS = 40_000  # rows x judged pairs x 2 orders
SAMPLE = COLUMN + "sample"  # OpenAI's `jsonl` data source: answers already in each item's `sample`


class ContentItem(BaseModel):
    item: dict[str, Any] = Field(description="A row: `messages` ending in the reference answer, `tools`, ...")
    sample: dict[str, Any] | None = Field(None, description="jsonl: the answer already made (`output_text`, or "
                                          "`output`: [assistant message]).")


class Source(BaseModel):
    """Where the rows come from: OpenAI's `file_id` / `file_content`, or a dataset's split, or a bundled suite."""

    type: Literal["file_id", "file_content", "dataset", "suite"]
    id: str | None = Field(None, description="file_id: the uploaded file; dataset: the dataset id.")
    content: list[ContentItem] | None = Field(None, max_length=MAX_ROWS, description="file_content: the rows.")
    split: Literal["train", "test"] = Field("test", description="dataset: which split.")
    name: str | None = Field(None, description="suite: its name (`general`).")
    limit: int | None = Field(None, ge=1, le=MAX_ROWS, description="Only the first N rows (any source).")


class DataSource(BaseModel):
    type: Literal["completions", "jsonl", "tuneforge"]
    source: Source
    model: str | None = Field(None, description="completions: the one model sampled.")
    models: list[str] | None = Field(None, min_length=1, max_length=MAX_MODELS, description="tuneforge: the models "
                                     "compared (registry, ft:, upstream, `answers`, `column:KEY`).")
    reference: str | None = Field(None, description="tuneforge: judge every model against this one (default: "
                                  "every pair).")
    sampling_params: SamplingSpec = Field(default_factory=SamplingSpec)

    def model_names(self) -> list[str]:
        if self.type == "completions":
            if not self.model:
                raise UserError("a completions data source needs a `model`", param="data_source.model")
            return [self.model]
        if self.type == "jsonl":
            return [SAMPLE]
        if not self.models:
            raise UserError("a tuneforge data source needs `models`", param="data_source.models")
        if len(set(self.models)) != len(self.models):
            raise UserError("a model is named twice in `models`", param="data_source.models")
        return self.models


class EvalRunSpec(BaseModel):
    eval_id: str
    name: str
    data_source: dict[str, Any]  # as given, echoed back by the API
    models: list[str]
    reference: str | None = None
    testing_criteria: list[dict[str, Any]]
    sampling: SamplingSpec
    test_set: str  # its name in the report
    suite: bool = False  # a bundled suite: the report adds the forgetting check
    rows: int
    metadata: dict[str, str] | None = None


class EvalKind(JobKind):
    name = "eval"
    noun = "eval run"
    Spec = EvalRunSpec
    id_prefix = "evalrun_"
    event_prefix = "evalevent_"
    id_param = "run_id"
    created_message = "Eval run created"
    queued_message = "Rows and models checked, run queued"

    def accept(self, s: Session, project: Project, request: Any, **where: Any) -> Job:
        """A RunCreate request for the eval `where["eval"]` (its row): everything checkable is checked here, so
        a bad run is a 400 now rather than a failed job later."""
        ev: Eval = where["eval"]
        try:
            source = DataSource.model_validate(request.data_source)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise UserError(f"data_source.{field}: {err['msg']}", param=f"data_source.{field}") from None
        names = source.model_names()
        test_name, rows = _rows(s, project.id, source)
        criteria = list(ev.testing_criteria)
        if source.source.type == "suite" and not any(c["type"] == "by_row" for c in criteria):
            criteria.insert(0, {"type": "by_row", "name": suite.SUITE_GRADER})  # each row's own grader
        _check_work(source, names, criteria, rows)
        checker = Models(locate=_locator_session(s, project.id), hosted=models.is_hosted)
        checker.check(names)
        checker.check_judges([c["model"] for c in criteria if c.get("model")])
        spec = EvalRunSpec(
            eval_id=ev.id, name=request.name or f"{ev.name} run", data_source=request.data_source, models=names,
            reference=source.reference, testing_criteria=criteria, sampling=source.sampling_params,
            test_set=test_name, suite=source.source.type == "suite", rows=len(rows), metadata=request.metadata,
        )
        job = jobs.submit(s, project_id=project.id, kind=self.name, spec=spec.model_dump(mode="json"))
        save_rows(job, rows)
        return job

    def run(self, ctx: JobContext) -> dict:
        spec: EvalRunSpec = self.spec(ctx.job)
        folder, rows = Path(ctx.job.out_dir), load_rows(ctx.job)
        with ctx.db.session() as s:  # grader files by id in the spec, read by path here
            criteria = evals.with_paths(s, ctx.job.project_id, spec.testing_criteria)
        ctx.event(f"Evaluating {', '.join(spec.models)} on {len(rows)} rows")
        models_ = Models(locate=_locator(ctx.db, ctx.job.project_id), hosted=models.is_hosted)
        report = execute([TestSet(spec.test_set, rows)], models_, spec.models, criteria, reference=spec.reference,
                         sampling=spec.sampling, workdir=folder, on_event=ProgressEvents(ctx), check=ctx.check,
                         forgetting=spec.suite)
        work = report.get("work", {})
        ctx.event(f"Report written: {work.get('generated', 0)} answers generated and {work.get('judge_calls', 0)} "
                  "judge calls made by this attempt")
        return summary(report)


def _check_work(source: DataSource, names: list[str], criteria: list[dict], rows: list[dict]) -> None:
    """What the run's graders and models need from its rows, and a bound on the work one run may ask for."""
    judged = any(graders.get(c["type"]).pairwise for c in criteria)
    if judged and len(names) < 2:
        raise UserError("this eval has a pairwise judge: give at least two models (a tuneforge data source with "
                        "`models`, e.g. your model and `answers`)", param="data_source.models")
    for name in names:
        if name.startswith(COLUMN):
            key = name[len(COLUMN):]
            missing = next((i for i, r in enumerate(rows, 1) if key not in r), None)
            if missing is not None:
                raise UserError(f"model '{name}': row {missing} has no field '{key}'", param="data_source.models")
    pairs = len(pairs_for(names, source.reference)) if judged else 0
    generations, judge_calls = len(rows) * len(names), 2 * pairs * len(rows)
    if generations > MAX_GENERATIONS or judge_calls > MAX_JUDGE_CALLS:
        raise UserError(f"this run asks for {generations:,} answers and up to {judge_calls:,} judge calls; one run "
                        f"may ask for at most {MAX_GENERATIONS:,} and {MAX_JUDGE_CALLS:,}: use fewer rows or models, "
                        "or a `reference` model", param="data_source")


def summary(report: dict) -> dict:
    """What the run object shows without the whole report: counts, means with CIs, pairwise and ratings."""
    models_ = [{"name": m["name"], "graders": m["graders"]} for m in report["models"]]
    return {"models": models_, "pairwise": report["pairwise"], "ratings": report["ratings"],
            "judge": report["judge"], "counts": _counts(report)}


def _counts(report: dict) -> dict:
    """OpenAI's result counts over output items (one per row and model): passed when every pointwise grade
    that applies is 1 (and there is one), errored when the model gave no answer, failed otherwise."""
    total = passed = errored = 0
    per: dict[str, list[int]] = {}
    for row in report["rows"]:
        for model, out in row["outputs"].items():
            total += 1
            if out.get("error"):
                errored += 1
                continue
            scores = [(label, g[model]["score"]) for label, g in row["grades"].items()
                      if model in g and g[model]["score"] is not None]
            for label, score in scores:
                per.setdefault(label, [0, 0])[0 if score >= 1 else 1] += 1
            passed += bool(scores) and all(score >= 1 for _label, score in scores)
    return {"total": total, "passed": passed, "failed": total - passed - errored, "errored": errored,
            "per_testing_criteria": {k: {"passed": v[0], "failed": v[1]} for k, v in per.items()}}


def _rows(s: Session, project_id: str, source: DataSource) -> tuple[str, list[dict]]:
    src = source.source
    if src.type == "suite":
        test_set = suite.load_suite(src.name or "")
        name, rows = test_set.name, test_set.rows[: src.limit] if src.limit else test_set.rows
        return (f"{name}, first {len(rows)} rows" if src.limit and len(rows) < len(test_set.rows) else name), rows
    if src.type == "dataset":
        ds = datasets.get(s, src.id or "", project_id)
        lines = datasets.export_lines(s, ds, src.split, chat=True)  # a pair: its input and preferred answer
        name, rows = f"{ds.name} ({src.split})", [json.loads(line) for line in lines]
    elif src.type == "file_id" and source.type == "jsonl":  # OpenAI's lines: {"item": ..., "sample": ...}
        f = files.get(s, src.id or "", project_id=project_id)
        rows, name = _valid_content([_item(c, "jsonl") for c in _content_lines(Path(f.path), f.id)]), f.filename
    elif src.type == "file_id":
        f = files.get(s, src.id or "", project_id=project_id)
        rows, name = _valid(Path(f.path), f"{f.id} ({f.filename})"), f.filename
    else:
        rows, name = _valid_content([_item(c, source.type) for c in src.content or []]), "file_content"
    if src.limit and len(rows) > src.limit:
        rows, name = rows[: src.limit], f"{name}, first {src.limit} rows"
    if not rows or len(rows) > MAX_ROWS:
        raise UserError(f"an eval run takes 1 to {MAX_ROWS} rows; this source has {len(rows)}",
                        param="data_source.source")
    return name, rows


def _valid(path: Path, shown: str) -> list[dict]:
    """The rows of a test file, or one FILE:LINE: problem per bad row (named as the caller knows the file)."""
    report = validate_file(path, prompts=True)
    if not report.ok:
        problems = [line.replace(str(path), shown) for line in report.format_problems()]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UserError(f"{shown} has rows an eval cannot use:\n" + "\n".join(problems[:20]) + more,
                        param="data_source.source", code="invalid_file_format")
    return [row for _line, row in report.rows]


def _content_lines(path: Path, file_id: str) -> list[ContentItem]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            items.append(ContentItem.model_validate_json(line))
        except ValidationError as exc:
            raise UserError(f"{file_id}:{n}: not an {{\"item\": ..., \"sample\": ...}} line "
                            f"({exc.errors()[0]['msg']})", param="data_source.source") from None
        if len(items) > MAX_ROWS:
            break
    return items


def _valid_content(rows: list[dict]) -> list[dict]:
    """Inline rows, checked as a file's would be (the line numbers are the items' positions, from 1)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", prefix="file_content-") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        return _valid(Path(f.name), "file_content")


def _item(content: ContentItem, kind: str) -> dict:
    row = dict(content.item)
    sample = content.sample
    if kind == "jsonl" and sample is not None:
        output = sample.get("output")
        row["sample"] = sample.get("output_text") if "output_text" in sample else \
            output[0] if isinstance(output, list) and output else ""
    return row


def _locator_session(s: Session, project_id: str):
    """At acceptance: does the project have this model (no files are touched)."""
    def locate(name: str) -> Local | None:
        return Local(name) if models.find(s, name, project_id, checkpoints=True) is not None else None

    return locate


def _locator(db: Database, project_id: str):
    """In the worker: where the weights are, and the texts the served model cuts from its requests."""
    def locate(name: str) -> Local | None:
        with db.session() as s:
            if models.find(s, name, project_id, checkpoints=True) is None:
                return None
        w = models.resolve(db, name, project_id)
        adapter = str(w.adapter) if w.adapter else None
        return Local(w.base, adapter, cache_id=f"{name}@{Path(adapter or w.base).name}",
                     pruning_rules=w.pruning_rules)

    return locate


KIND = EvalKind()
