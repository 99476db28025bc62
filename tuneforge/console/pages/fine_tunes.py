"""Fine-tunes: the project's fine-tuning jobs, a form that starts one, and a job's page that follows it live.

The form builds the API's own request (`FineTuningJobCreate`) and hands it to the fine-tune kind's `accept`, as
`POST /v1/fine_tuning/jobs` does, so the console accepts and refuses exactly what the API does; a refusal is
shown next to the field it names, with everything typed kept. A job's page is rendered whole by the server
(events, checkpoints, the loss curve so far) and then follows the job through `/jobs/{id}/live`: fine_tunes.js
appends what arrives after the events it was rendered with, and fetches the outcome card again (status, model
id, checkpoints) when something other than a training step happens.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from tuneforge.console.auth import Acting, User
from tuneforge.console.render import fragment, page
from tuneforge.errors import Conflict, RateLimited, TuneforgeError
from tuneforge.server.deps import StateDep
from tuneforge.server.protocol import FineTuningJobCreate
from tuneforge.server.routes.fine_tuning import KIND, to_api
from tuneforge.store import datasets, files, jobs, models
from tuneforge.store.tables import File, Job

router = APIRouter(include_in_schema=False)
PAGE = 20  # jobs a page of the list shows
EVENTS_PAGE = 50  # events a job's page shows (older ones a page at a time)
CHECKPOINTS = 10  # a job keeps at most 10 (TrainConfig.keep_checkpoints)
MAX_POINTS = 2000  # newest metrics events drawn (one a second at most: over half an hour of training)
MAX_CHOICES = 200  # newest files, datasets and models offered in the form
HYPER = ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")
FIELDS = ("model", "training_file", "validation_file", "method", "suffix", "seed", *HYPER)
BLANK = {"model": "", "training_file": "", "validation_file": "", "method": "supervised", "suffix": "", "seed": "",
         **dict.fromkeys(HYPER, "auto")}
METHODS = (("supervised", "Supervised: learn the answers"), ("dpo", "DPO: prefer the preferred answer of each pair"))
SOURCES = {"base": "base", "fine_tune": "fine-tuned", "merge": "merged"}


class FormInvalid(Exception):
    """The form's values do not make a valid request: `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(errors)
        self.errors = errors


# --- the list and the form
@router.get("/fine-tunes")
def index(request: Request, state: StateDep, user: User, after: str | None = None):
    return _index(request, state, user, BLANK, {}, after=after)


@router.post("/fine-tunes")
def create(request: Request, state: StateDep, user: Acting, model: Annotated[str, Form()] = "",
           training_file: Annotated[str, Form()] = "", validation_file: Annotated[str, Form()] = "",
           suffix: Annotated[str, Form()] = "", seed: Annotated[str, Form()] = "",
           n_epochs: Annotated[str, Form()] = "auto", batch_size: Annotated[str, Form()] = "auto",
           learning_rate_multiplier: Annotated[str, Form()] = "auto", method: Annotated[str, Form()] = "supervised",
           beta: Annotated[str, Form()] = "auto"):
    values = {"model": model, "training_file": training_file, "validation_file": validation_file, "suffix": suffix,
              "seed": seed, "n_epochs": n_epochs, "batch_size": batch_size,
              "learning_rate_multiplier": learning_rate_multiplier, "method": method, "beta": beta}
    try:
        body = to_request(values)
        with state.db.session() as s:
            job_id = KIND.accept(s, user.project, body).id
    except FormInvalid as exc:
        return _index(request, state, user, values, exc.errors, status_code=422)
    except TuneforgeError as exc:
        status = 409 if isinstance(exc, Conflict) else 429 if isinstance(exc, RateLimited) else 400
        return _index(request, state, user, values, {field_of(exc, values): str(exc)}, status_code=status)
    return RedirectResponse(f"/fine-tunes/{job_id}", status_code=303)


def to_request(values: dict[str, str]) -> FineTuningJobCreate:
    """The API's request from the form's text (a blank field is not given; `auto` in any case is auto);
    FormInvalid naming each field pydantic refuses."""
    def hyper(name: str) -> str:
        text = values[name].strip()
        return "auto" if not text or text.lower() == "auto" else text

    body = {"model": values["model"], "training_file": values["training_file"],
            "validation_file": values["validation_file"] or None, "suffix": values["suffix"].strip() or None,
            "seed": values["seed"].strip() or None}
    if values.get("method") == "dpo":
        body["method"] = {"type": "dpo", "dpo": {"hyperparameters": {h: hyper(h) for h in HYPER}}}
    else:  # (a method the form does not offer is refused by the request model, against the method field)
        body["hyperparameters"] = {h: hyper(h) for h in HYPER if h != "beta"}
        if values.get("method", "supervised") != "supervised":
            body["method"] = {"type": values["method"]}
    try:
        return FineTuningJobCreate.model_validate(body)
    except ValidationError as exc:
        raise FormInvalid(field_errors(exc)) from None


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic's errors by form field (the first for each; "_" for one no field shows)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        name = loc[loc.index("hyperparameters") + 1] if "hyperparameters" in loc[:-1] else loc[0]
        if name in HYPER and err["type"] == "literal_error":
            continue  # the `auto` side of `auto | number`: the number's error says more
        message = err["msg"]
        if name in HYPER:
            message = f"Enter auto or a number: {message[0].lower()}{message[1:]}"
        errors.setdefault(name if name in FIELDS else "_", message)
    return errors or {"_": str(exc)}


def field_of(exc: TuneforgeError, values: dict[str, str]) -> str:
    """The form field a domain error is about: the one its `param` names (`hyperparameters.n_epochs` ->
    `n_epochs`), else the one whose value its message quotes (a dataset's NotFound says `dataset_id`), else "_"."""
    name = (exc.param or "").removeprefix("hyperparameters.")
    if name in FIELDS:
        return name
    quoted = [f for f in FIELDS if values.get(f, "").strip() and values[f].strip() in str(exc)]
    return quoted[0] if len(quoted) == 1 else "_"


def _index(request: Request, state: StateDep, user: User, values: dict[str, str], errors: dict[str, str], *,
           after: str | None = None, status_code: int = 200):
    project_id = user.project.id
    with state.db.session() as s:
        rows, more = jobs.list_(s, project_id=project_id, after=after, limit=PAGE, kind=KIND.name)
        listed = [to_api(j) for j in rows]
        names = _file_names(s, {j.training_file for j in listed}, project_id)
        choices = _choices(s, project_id, values)
    return page(request, "fine_tunes.html", user, status_code=status_code, jobs=listed, more=more, after=after,
                file_names=names, values=values, errors=errors, **choices)


def _file_names(s: Session, ids: set[str], project_id: str) -> dict[str, str]:
    rows = [s.get(File, i) for i in ids]
    return {f.id: f.filename for f in rows if f is not None and f.project_id == project_id}


def _choices(s: Session, project_id: str, values: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """The form's options: bases (then the project's newest models, which can be fine-tuned further), and its
    ready datasets and fine-tune files. A value that is not among them (a file since deleted) stays, marked."""
    listed = models.list_(s, project_id)
    made = [m for m in listed if m.source != "base"][::-1][:MAX_CHOICES]
    bases = [(m.id, f"{m.id} ({SOURCES.get(m.source, m.source)})")
             for m in [*[m for m in listed if m.source == "base"], *made]]
    sets = [d for d in datasets.list_(s, project_id) if d.status == "ready"][:MAX_CHOICES]
    uploads = files.list_(s, project_id=project_id, purpose="fine-tune", limit=MAX_CHOICES)
    file_opts = [(f.id, f"File {f.filename} ({f.id})") for f in uploads]

    def dataset_opts(split: str) -> list[tuple[str, str]]:
        return [(d.id, f"{_kind(d)} {d.name}: {d.counts.get(split, 0)} {split} rows ({d.id})") for d in sets
                if d.counts.get(split, 0)]

    options = {
        "method_options": list(METHODS),
        "model_options": [("", "Choose a base model…"), *bases],
        "training_options": [("", "Choose a dataset or a file…"), *dataset_opts("train"), *file_opts],
        "validation_options": [("", "None"), *dataset_opts("test"), *file_opts],
    }
    for field, key in (("model", "model_options"), ("training_file", "training_options"),
                       ("validation_file", "validation_options")):
        if values[field] and values[field] not in {v for v, _ in options[key]}:
            options[key].append((values[field], f"{values[field]} (not found)"))
    return options


def _kind(ds) -> str:
    return "Preference dataset" if getattr(ds, "kind", "chat") == "preference" else "Dataset"


# --- one job
@router.get("/fine-tunes/{job_id}")
def detail(request: Request, state: StateDep, user: User, job_id: str, events_after: str | None = None):
    with state.db.session() as s:
        job = jobs.get(s, job_id, project_id=user.project.id, kind=KIND.name)
        context = {**_outcome(s, job), **_events(s, job, events_after)}
    return page(request, "fine_tunes_detail.html", user, errors={}, **context)


@router.get("/fine-tunes/{job_id}/outcome")
def outcome(request: Request, state: StateDep, user: User, job_id: str):
    """The card that changes when the job does (status, model id, hyperparameters, checkpoints): the job's page
    swaps it in again as the job moves on."""
    with state.db.session() as s:
        job = jobs.get(s, job_id, project_id=user.project.id, kind=KIND.name)
        context = _outcome(s, job)
    return fragment(request, "fine_tunes_outcome.html", user, errors={}, **context)


@router.post("/fine-tunes/{job_id}/cancel")
def cancel(request: Request, state: StateDep, user: Acting, job_id: str):
    try:
        with state.db.session() as s:
            jobs.cancel(s, job_id, project_id=user.project.id, kind=KIND.name)
    except Conflict as exc:  # it ended first: say so on its page
        with state.db.session() as s:
            job = jobs.get(s, job_id, project_id=user.project.id, kind=KIND.name)
            context = {**_outcome(s, job), **_events(s, job, None)}
        return page(request, "fine_tunes_detail.html", user, status_code=409, errors={"_": str(exc)}, **context)
    return RedirectResponse(f"/fine-tunes/{job_id}", status_code=303)


def _outcome(s: Session, job: Job) -> dict[str, Any]:
    shown = to_api(job)
    ended = job.finished_at is not None
    rows, _ = models.checkpoints(s, job.id, after=None, limit=CHECKPOINTS)
    return {
        "job": shown, "active": job.status in jobs.ACTIVE, "final": (job.result or {}).get("metrics") or {},
        "took_s": (job.finished_at if ended else int(time.time())) - job.created_at,
        "checkpoints": [{"step": c.step, "model": c.model_name, "metrics": c.metrics or {}} for c in rows],
    }


def _events(s: Session, job: Job, after: str | None) -> dict[str, Any]:
    """The newest events (or an older page of them), and the loss curve so far: everything up to one event
    (`last_seq`), after which the live stream takes over."""
    newest, _ = jobs.events(s, job.id, after=None, limit=1)
    last_seq = newest[0].seq if newest else 0
    rows, more = jobs.events(s, job.id, after=after, limit=EVENTS_PAGE)
    points = [e.data or {} for e in jobs.metric_events(s, job.id, upto=last_seq, limit=MAX_POINTS)]
    chart = {
        "job_id": job.id, "active": job.status in jobs.ACTIVE, "last_seq": last_seq, "max_points": MAX_POINTS,
        "follow_events": after is None,
        "train": [[p["step"], p["train_loss"]] for p in points if "step" in p and "train_loss" in p],
        "valid": [[p["step"], p["valid_loss"]] for p in points if "step" in p and "valid_loss" in p],
        "progress": points[-1] if points else None,
    }
    return {"events": [e for e in rows if e.seq <= last_seq], "events_more": more, "events_after": after,
            "chart": chart}
