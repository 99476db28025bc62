"""Datasets: the project's datasets a page at a time, and a JSONL upload that makes one.

The upload is read as the API reads `POST /v1/files` (streamed to a private temp file, capped as it arrives) and
checked line by line by the same validator; each bad line is shown beside the file field as `line N: field: what
is wrong`. The file and its dataset are stored in one transaction, so a bad line, a bad setting or a failure
keeps nothing. A dataset's own page (entries, pruning rules, relabel, export) is `dataset_detail`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.console import auth
from tuneforge.console.auth import User
from tuneforge.console.pages import dataset_detail
from tuneforge.console.pages.forms import status_of
from tuneforge.console.render import page
from tuneforge.errors import TuneforgeError, UserError
from tuneforge.server import uploads
from tuneforge.server.deps import State, StateDep
from tuneforge.server.errors import TooLarge
from tuneforge.server.routes import datasets as api
from tuneforge.store import datasets, files
from tuneforge.store.console_sessions import CSRF_HEADER, SignedIn

router = APIRouter(include_in_schema=False)
router.include_router(dataset_detail.router)
PAGE = 25
Id = Annotated[str | None, Query(max_length=64)]
DEFAULTS = {"name": "", "dedupe": "near", "test_fraction": "0.2", "sample": "", "label": "", "pruning_rule": ""}
FIELD_OF = {"source": "file", "file_id": "file", "pruning_rules": "pruning_rule"}  # a domain error's param -> field


class _Rejected(Exception):
    """The upload has errors to show: raised inside the upload's temp file and transaction, so both are undone."""


def upload_limit(state: State) -> int:
    """The largest file the form takes: the API's upload cap (the server's guard gives this path the upload cap, as
    it does /v1/files)."""
    return state.settings.max_upload_bytes


@router.get("/datasets")
def index(request: Request, state: StateDep, user: User, after: Id = None):
    return _index(request, state, user, after)


def _index(request: Request, state: State, user: SignedIn, after: str | None = None, *,
           values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
           problems: list[str] | None = None, status: int = 200):
    with state.db.session() as s:
        rows, more = datasets.page(s, user.project.id, after=after, limit=PAGE)
        items = [api.to_api(s, ds) for ds in rows]
    return page(request, "datasets.html", user, status_code=status, items=items, more=more, after=after,
                values=values or DEFAULTS, errors=errors or {}, problems=problems or [],
                max_bytes=upload_limit(state), source=dataset_detail.source_text)


@router.post("/datasets/upload")
async def upload(request: Request, state: StateDep, user: User):
    """Make a dataset from an uploaded JSONL file; on any error the form again, with what the user typed."""
    if not auth.same_origin(request):  # before reading the body
        raise auth.CrossSite()
    values, errors, problems = dict(DEFAULTS), {}, []
    status = 422
    try:
        with files.incoming() as part:
            form = await uploads.read_form(request, part.write, file_field="file", limit=upload_limit(state))
            auth.verify(request, user, request.headers.get(CSRF_HEADER) or form.fields.get("csrf_token"))
            values.update({k: form.fields.get(k, v) for k, v in DEFAULTS.items()})
            ds_id = await run_in_threadpool(_store, state, user, part, form, values, errors, problems)
    except _Rejected:
        pass
    except TooLarge as exc:
        errors["file"], status = str(exc), 413
    except TuneforgeError as exc:
        errors[FIELD_OF.get(exc.param or "", exc.param if exc.param in DEFAULTS else "_")] = str(exc)
        status = status_of(exc)
    if errors:
        return _index(request, state, user, values=values, errors=errors, problems=problems, status=status)
    return RedirectResponse(f"/datasets/{ds_id}", status_code=303)


def _store(state: State, user: SignedIn, part: files.Incoming, form: uploads.Form, values: dict[str, str],
           errors: dict[str, str], problems: list[str]) -> str:
    """Check everything, then keep the file and its dataset together; `_Rejected` (after filling `errors`) when
    anything is wrong, so that the caller's temp file and this transaction are undone."""
    name = values["name"].strip()
    if not name or len(name) > 200:
        errors["name"] = "Name the dataset (at most 200 characters)."
    recipe = _recipe(values, errors)
    if not form.filename:
        errors["file"] = "Choose a JSONL file: one conversation per line, as OpenAI's fine-tuning format."
        raise _Rejected()
    with state.db.session() as s:
        try:
            row = files.create_from(s, part, project_id=user.project.id, filename=form.filename, purpose="fine-tune")
        except files.InvalidTrainingFile as exc:
            bad = len(exc.problems) + exc.more
            errors["file"] = (f"{bad} line{'s' if bad != 1 else ''} of {form.filename} cannot be used: fix "
                              f"{'them' if bad != 1 else 'it'} and upload the file again.")
            problems.extend(f"line {p.line}: {p.field}: {p.message}" for p in exc.problems)
            if exc.more:
                problems.append(f"… and {exc.more} more")
        if errors:
            raise _Rejected()
        s.flush()
        ds_id = datasets.create(s, user.project.id, name=name, recipe=recipe, file_id=row.id).id
    part.kept = True
    return ds_id


def _recipe(values: dict[str, str], errors: dict[str, str]) -> datasets.Recipe | None:
    """The form's settings as a Recipe, checked; None (with `errors` filled) when one is wrong."""
    sample = _number(values, errors, "sample", int, "a whole number of entries, or empty for all")
    fraction = _number(values, errors, "test_fraction", float, "a number from 0 to below 1, like 0.2")
    recipe = datasets.Recipe(sample=sample, dedupe=values["dedupe"], label=values["label"].strip() or None,
                             test_fraction=0.2 if fraction is None else fraction)
    try:
        recipe.pruning_rules = datasets.check_pruning_rules([dataset_detail.typed_rule(values["pruning_rule"])])
        recipe.check()
    except UserError as exc:
        errors[FIELD_OF.get(exc.param or "", exc.param or "_")] = str(exc)
    return None if errors else recipe


def _number(values: dict[str, str], errors: dict[str, str], key: str, kind: type, what: str) -> Any:
    text = values[key].strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        errors[key] = f"'{text}' is not a number: write {what}."
        return None
