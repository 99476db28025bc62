"""Evals in the console: the project's evals and recent runs, a form that makes an eval and runs it (a test set x
models x graders and a pairwise judge), a run's progress as it happens and then its results (the report's own
sections: scores with error bars, win-rate matrices, the Bradley-Terry ranking), and its rows side by side with
the judge's explanations, filtered to disagreements and paged.

The form builds the API's requests (`EvalCreate`, and a `RunCreate` with a `tuneforge` data source) and goes
through the same calls as POST /v1/evals and POST /v1/evals/{id}/runs (`evals.create`, the eval kind's
`accept`), in one transaction: a run refused by `accept` leaves no eval behind, and its error is shown next to
the field it is about, with everything typed kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile

from tuneforge.console.auth import Acting, User
from tuneforge.console.render import fragment, page
from tuneforge.errors import Conflict, NotFound, RateLimited, TuneforgeError
from tuneforge.evals import report_html, suite
from tuneforge.jobs import registry as kinds
from tuneforge.server.deps import StateDep
from tuneforge.server.evals_protocol import EvalCreate, RunCreate
from tuneforge.server.routes import evals as api
from tuneforge.store import datasets, evals, files, jobs, models
from tuneforge.store.tables import Eval, Job

router = APIRouter(include_in_schema=False)
PAGE = 20  # evals, runs and rows shown a page
CHOICES = 200  # datasets, files and models offered in the form (newest first)
EVENTS_SHOWN = 50  # a finished run's last events
MAX_INLINE_UPLOAD = 8 << 20  # a test file uploaded with the form (larger ones: upload through the API)
GRADERS = [("exact", "Exact match with the reference answer"),
           ("json", "JSON fields: the share of the reference's fields right"),
           ("numeric", "Numeric: the answer's number equals the reference's"),
           ("regex", "Regex: the answer matches a pattern")]
ANSWERS = ("answers", "The test set's own answers (e.g. the teacher's captured replies)")


@dataclass
class CreateForm:
    """What the create form sent, as typed: shown again as it was when something is wrong."""

    name: str = ""
    source: str = "dataset"  # dataset | file | suite
    dataset_id: str = ""
    split: str = "test"
    file_id: str = ""
    suite: str = "general"
    models: list[str] = field(default_factory=list)
    other_models: str = ""
    reference: str = ""
    graders: list[str] = field(default_factory=lambda: ["exact"])
    regex_pattern: str = ""
    judge: str = ""
    judge_criteria: str = ""
    limit: str = ""
    max_tokens: str = ""

    @classmethod
    def of(cls, form) -> CreateForm:
        def text(key: str) -> str:
            value = form.get(key)
            return value.strip() if isinstance(value, str) else ""

        return cls(name=text("name"), source=text("source") or "dataset", dataset_id=text("dataset_id"),
                   split=text("split") or "test", file_id=text("file_id"), suite=text("suite"),
                   models=[m for m in form.getlist("models") if isinstance(m, str)],
                   other_models=text("other_models"), reference=text("reference"),
                   graders=[g for g in form.getlist("graders") if isinstance(g, str)],
                   regex_pattern=text("regex_pattern"), judge=text("judge"), judge_criteria=text("judge_criteria"),
                   limit=text("limit"), max_tokens=text("max_tokens"))

    def model_names(self) -> list[str]:
        """The checked models, then the typed ones (comma- or line-separated), each once."""
        typed = [m.strip() for m in re.split(r"[,\n]", self.other_models) if m.strip()]
        return list(dict.fromkeys([*self.models, *typed]))

    def criteria(self) -> list[tuple[str, dict]]:
        """(the form field it came from, the testing criterion) for each grader chosen, the judge last."""
        out = []
        for name, _label in GRADERS:
            if name in self.graders:
                options = {"pattern": self.regex_pattern} if name == "regex" else {}
                out.append(("regex_pattern" if name == "regex" else "graders", {"type": name, "name": name,
                                                                                **options}))
        if self.judge:
            extra = {"criteria": self.judge_criteria} if self.judge_criteria else {}
            out.append(("judge", {"type": "judge", "name": "judge", "model": self.judge, **extra}))
        return out


class FormError(Exception):
    """Input the form itself can tell is wrong, for one field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


# --- the list and the create form


@router.get("/evals")
def index(request: Request, state: StateDep, user: User, after: str | None = None, runs_after: str | None = None):
    return _index(request, state, user, CreateForm(), {}, after=after, runs_after=runs_after)


def _index(request: Request, state, user, form: CreateForm, errors: dict, *, status_code: int = 200,
           after: str | None = None, runs_after: str | None = None):
    pid = user.project.id
    with state.db.session() as s:
        rows, more = evals.list_(s, pid, after=after, limit=PAGE, order="desc")
        listed = [_eval_view(e) for e in rows]
        runs, runs_more = jobs.list_(s, project_id=pid, after=runs_after, limit=PAGE, kind="eval")
        runs_last = runs[-1].id if runs else None
        ids = {j.spec.get("eval_id") for j in runs}
        names = {e.id: e.name for e in s.scalars(select(Eval).where(Eval.id.in_(ids), Eval.project_id == pid,
                                                                    Eval.deleted.is_(False)))}
        recent = [_run_view(j, names.get(j.spec.get("eval_id"), "")) for j in runs
                  if not (j.result or {}).get("deleted") and j.spec.get("eval_id") in names]
        choices = _choices(s, pid)
    return page(request, "evals.html", user, status_code=status_code, evals=listed,
                next_after=listed[-1]["id"] if more and listed else None, runs=recent,
                runs_next=runs_last if runs_more else None, form=form, errors=errors, graders=GRADERS,
                answers=ANSWERS, **choices)


def _choices(s, pid: str) -> dict:
    """What the form offers: the project's datasets, uploaded files and models, and the bundled suites."""
    ds = [(d.id, f"{d.name} ({d.counts.get('test', '?') if d.counts else '?'} test rows)")
          for d in datasets.list_(s, pid)[:CHOICES]]
    fs = [(f.id, f"{f.filename} ({f.purpose}, {f.id})") for f in files.list_(s, project_id=pid, limit=CHOICES)]
    ms = models.list_(s, pid)
    ms = ms if len(ms) <= CHOICES else [m for m in ms if m.source == "base"] + ms[-CHOICES:]
    return {"datasets": ds, "files": fs, "suites": suite.names(),
            "models": [(m.id, m.source.replace("_", "-")) for m in ms]}


@router.post("/evals")
async def create(request: Request, state: StateDep, user: Acting):
    data = await request.form()
    form = CreateForm.of(data)
    upload = data.get("upload")
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            form.file_id, form.source = await _store_upload(state, user, upload), "file"
        eval_id, run_id = await run_in_threadpool(_create, state, user, form)
    except FormError as exc:
        return await run_in_threadpool(_index, request, state, user, form, {exc.field: str(exc)}, status_code=400)
    except TuneforgeError as exc:
        status = 409 if isinstance(exc, Conflict) else 429 if isinstance(exc, RateLimited) else 400
        return await run_in_threadpool(_index, request, state, user, form, {_field_of(exc, form): str(exc)},
                                       status_code=status)
    return RedirectResponse(f"/evals/{eval_id}/runs/{run_id}", status_code=303)


async def _store_upload(state, user, upload: UploadFile) -> str:
    """An uploaded test file, kept as the project's file (purpose `evals`) before anything else is checked: if the
    run is refused, the form shows it chosen, so it need not be sent again."""
    content = await upload.read(MAX_INLINE_UPLOAD + 1)
    if len(content) > MAX_INLINE_UPLOAD:
        raise FormError("source", f"The file is over {MAX_INLINE_UPLOAD >> 20} MB: upload it through the API "
                                  "(`client.files.create(..., purpose='evals')`) and choose it here.")

    def keep() -> str:
        with state.db.session() as s:
            return files.create(s, project_id=user.project.id, filename=upload.filename or "test.jsonl",
                                purpose="evals", content=content).id

    return await run_in_threadpool(keep)


def _create(state, user, form: CreateForm) -> tuple[str, str]:
    """The eval and its first run, as the API makes them; FormError or the API's own errors otherwise."""
    names, criteria, sampling, limit = _checked(form)
    try:
        body = EvalCreate(name=form.name or None, testing_criteria=[c for _f, c in criteria])
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FormError("name" if err["loc"][:1] == ("name",) else "graders", err["msg"]) from None
    data_source = {"type": "tuneforge", "models": names, "source": _source(form, limit), "sampling_params": sampling,
                   **({"reference": form.reference} if form.reference else {})}
    with state.db.session() as s:
        ev = evals.create(s, user.project.id, name=body.name, data_source_config=body.data_source_config,
                          testing_criteria=body.testing_criteria, metadata=None)
        job = kinds.get("eval").accept(s, user.project, RunCreate(data_source=data_source), eval=ev)
        return ev.id, job.id


def _checked(form: CreateForm) -> tuple[list[str], list[tuple[str, dict]], dict, int | None]:
    names = form.model_names()
    if not names:
        raise FormError("models", "Choose at least one model (two or more to compare them with a judge).")
    criteria = form.criteria()
    if not criteria:
        raise FormError("graders", "Choose at least one grader, or name a judge model for head-to-heads.")
    if "regex" in form.graders and not form.regex_pattern:
        raise FormError("regex_pattern", "Give the pattern the regex grader looks for.")
    limit = _positive(form.limit, "limit", "A row limit is a whole number of rows, 1 or more (or empty: all).")
    tokens = _positive(form.max_tokens, "max_tokens", "Max tokens is a whole number from 1 to 4096 (or empty).")
    if tokens is not None and tokens > 4096:
        raise FormError("max_tokens", "Max tokens is a whole number from 1 to 4096 (or empty).")
    return names, criteria, ({"max_completion_tokens": tokens} if tokens else {}), limit


def _positive(text: str, name: str, message: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise FormError(name, message)
    return int(text)


def _source(form: CreateForm, limit: int | None) -> dict:
    """The run's data source, as the API takes it (with the row limit, if any)."""
    first = {"limit": limit} if limit else {}
    if form.source == "suite":
        return {"type": "suite", "name": form.suite, **first}
    if form.source == "dataset":
        if not form.dataset_id:
            raise FormError("source", "Choose a dataset (or another test set).")
        return {"type": "dataset", "id": form.dataset_id, "split": form.split, **first}
    if form.source == "file":
        if not form.file_id:
            raise FormError("source", "Choose an uploaded file, or upload one.")
        return {"type": "file_id", "id": form.file_id, **first}
    raise FormError("source", "Choose where the test rows come from.")


def _field_of(exc: TuneforgeError, form: CreateForm) -> str:
    """The form field an API error is about (its `param`), `_` when none fits."""
    param = exc.param or ""
    criterion = re.match(r"testing_criteria\[(\d+)\]", param)
    if criterion:
        fields = [f for f, _c in form.criteria()]
        n = int(criterion.group(1))
        where = fields[n] if n < len(fields) else "graders"
        return "judge_criteria" if where == "judge" and param.endswith(".criteria") else where
    if param in ("model", "data_source.models") and form.judge and form.judge not in form.model_names() \
            and (f"'{form.judge}'" in str(exc) or f"`{form.judge}`" in str(exc)):
        return "judge"  # the judge is checked like a model, and named in the message
    return next((f for prefix, f in PARAM_FIELDS if param == prefix or param.startswith(prefix + ".")), "_")


PARAM_FIELDS = [("testing_criteria.model", "judge"), ("testing_criteria", "graders"), ("model", "models"),
                ("data_source.models", "models"), ("data_source.reference", "reference"), ("reference", "reference"),
                ("data_source.sampling_params", "max_tokens"), ("data_source.source", "source"),
                ("dataset_id", "source"), ("file_id", "source"), ("purpose", "source"), ("name", "name")]


# --- one eval


@router.get("/evals/{eval_id}")
def eval_page(request: Request, state: StateDep, user: User, eval_id: str, after: str | None = None):
    with state.db.session() as s:
        ev = evals.get(s, eval_id, user.project.id)
        runs = api.runs_of(s, user.project.id, eval_id)
        start = next((n + 1 for n, j in enumerate(runs) if j.id == after), 0) if after else 0
        shown = [_run_view(j, ev.name) for j in runs[start:start + PAGE]]
        view = _eval_view(ev)
    return page(request, "evals_eval.html", user, ev=view, runs=shown,
                next_after=shown[-1]["id"] if start + PAGE < len(runs) and shown else None)


def _eval_view(ev: Eval) -> dict:
    criteria = [{"name": c.get("name"), "type": c.get("type"), "model": c.get("model"),
                 "options": {k: v for k, v in c.items() if k not in ("name", "type", "model")}}
                for c in ev.testing_criteria]
    return {"id": ev.id, "name": ev.name, "created_at": ev.created_at, "criteria": criteria}


def _run_view(job: Job, eval_name: str) -> dict:
    spec = api.spec_of(job)
    return {"id": job.id, "eval_id": spec.eval_id, "eval_name": eval_name, "name": spec.name, "models": spec.models,
            "test_set": spec.test_set, "rows": spec.rows, "status": job.status, "created_at": job.created_at,
            "finished_at": job.finished_at, "reference": spec.reference,
            "error": (job.error or {}).get("message"), "final": job.status in jobs.FINAL}


# --- one run: progress, results, rows


def _run_of(state, user, eval_id: str, run_id: str) -> tuple[Eval, Job]:
    with state.db.session() as s:
        job = api.run_of(s, user.project, eval_id, run_id)  # NotFound for another project's or a deleted run
        ev = evals.get(s, eval_id, user.project.id)
    return ev, job


@router.get("/evals/{eval_id}/runs/{run_id}")
def run_page(request: Request, state: StateDep, user: User, eval_id: str, run_id: str):
    ev, job = _run_of(state, user, eval_id, run_id)
    events: list = []
    if job.status in jobs.FINAL:  # a live run's events arrive through /jobs/{id}/live, from the first
        with state.db.session() as s:
            rows, _more = jobs.events(s, run_id, after=None, limit=EVENTS_SHOWN)
            events = [{"created_at": e.created_at, "message": e.message, "level": e.level} for e in reversed(rows)]
    return page(request, "evals_run.html", user, run=_run_view(job, ev.name), events=events,
                **_results(state, job))


@router.get("/evals/{eval_id}/runs/{run_id}/results")
def run_results(request: Request, state: StateDep, user: User, eval_id: str, run_id: str):
    """The results part of the run page, fetched by its script when the run ends."""
    ev, job = _run_of(state, user, eval_id, run_id)
    return fragment(request, "evals_results.html", user, run=_run_view(job, ev.name), **_results(state, job))


def _results(state, job: Job) -> dict:
    report = _report(job)
    if report is None:
        return {"sections": None, "counts": None}
    return {"sections": report_html.sections(report), "counts": (job.result or {}).get("counts")}


def _report(job: Job) -> dict | None:
    path = Path(job.out_dir) / "report.json"
    if job.status != "succeeded" or not path.exists():
        return None
    stat = path.stat()
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _parsed(path: str, _mtime_ns: int, _size: int) -> dict:
    """A report read once while people page through its rows (a report is never rewritten in place)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


@router.get("/evals/{eval_id}/runs/{run_id}/rows")
def run_rows(request: Request, state: StateDep, user: User, eval_id: str, run_id: str, show: str = "all",
             after: int = -1):
    """The rows side by side, `PAGE` at a time after row `after`, only those that pass the filter `show`."""
    ev, job = _run_of(state, user, eval_id, run_id)
    report = _report(job)
    if report is None:
        raise Conflict(f"Run {run_id} has no rows to show yet: it is {job.status}", param="run_id")
    show = show if show in report_html.FILTERS else "all"
    matching = [r for r in report["rows"] if report_html.row_flags(r)[show]]
    start = next((n for n, r in enumerate(matching) if r["index"] > after), len(matching))
    chosen = matching[start:start + PAGE]
    return page(request, "evals_rows.html", user, run=_run_view(job, ev.name), show=show,
                filters=report_html.FILTERS, rows=[report_html.row(r) for r in chosen], total=len(report["rows"]),
                matching=len(matching), first=start + 1, last=start + len(chosen),
                next_after=chosen[-1]["index"] if start + PAGE < len(matching) else None)


@router.get("/evals/{eval_id}/runs/{run_id}/report.{ext}")
def run_report(state: StateDep, user: User, eval_id: str, run_id: str, ext: str):
    """The run's standalone report page or its JSON (what the API serves to a key, here for the session)."""
    if ext not in ("html", "json"):
        raise NotFound(f"No report.{ext}: there are report.html and report.json", param="run_id")
    path = api.report_path(state, user.project, eval_id, run_id, f"report.{ext}")
    return FileResponse(path, media_type="text/html" if ext == "html" else "application/json")


@router.post("/evals/{eval_id}/runs/{run_id}/cancel")
def cancel(state: StateDep, user: Acting, eval_id: str, run_id: str):
    with state.db.session() as s:
        api.run_of(s, user.project, eval_id, run_id)
        if s.get(Job, run_id).status not in jobs.FINAL:
            jobs.cancel(s, run_id, project_id=user.project.id, kind="eval")
    return RedirectResponse(f"/evals/{eval_id}/runs/{run_id}", status_code=303)

