"""Models and merges: the project's models (bundled and operator's bases, fine-tunes with their jobs, merges), a
merge form whose mergekit YAML is previewed live as it changes (`merge_form` builds it; htmx posts the form to
the preview on every change), the project's merge jobs and bake-offs, each with its own page (`model_jobs`).

A merge is accepted by the merge kind exactly as `POST /v1/merges` accepts it; what it refuses is shown beside the
field at fault, with the form as typed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from tuneforge.console.auth import Acting, User
from tuneforge.console.pages import model_jobs
from tuneforge.console.pages.forms import status_of
from tuneforge.console.pages.merge_form import DTYPES, ROWS, MergeForm, build, methods
from tuneforge.console.render import fragment, page
from tuneforge.errors import NotFound, TuneforgeError
from tuneforge.jobs import bakeoff, merge
from tuneforge.models import registry
from tuneforge.server.deps import State, StateDep
from tuneforge.server.routes import bakeoffs as bakeoffs_api
from tuneforge.server.routes import merges as merges_api
from tuneforge.store import jobs, models
from tuneforge.store.console_sessions import SignedIn

router = APIRouter(include_in_schema=False)
router.include_router(model_jobs.router)
PAGE = 20
SUGGESTIONS = 200  # the project's newest fine-tunes and merges suggested in the merge form (any name may be typed)
Id = Annotated[str | None, Query(max_length=300)]
FIELD_OF = {"adapters": "models", "weights": "weight_0", "config": "models", "search": "config_yaml"}


@router.get("/models")
def index(request: Request, state: StateDep, user: User, ft_after: Id = None, merged_after: Id = None,
          merges_after: Id = None, bakeoffs_after: Id = None):
    return _index(request, state, user, after={"ft": ft_after, "merged": merged_after, "merges": merges_after,
                                                "bakeoffs": bakeoffs_after})


def _index(request: Request, state: State, user: SignedIn, *, after: dict[str, str | None] | None = None,
           form: MergeForm | None = None, errors: dict[str, str] | None = None, status: int = 200):
    after = after or {}
    project = user.project.id
    form = form or MergeForm()
    with state.db.session() as s:
        tuned, tuned_more = models.fine_tuned_page(s, project, after=after.get("ft"), limit=PAGE)
        merged, merged_more = models.merged_page(s, project, after=after.get("merged"), limit=PAGE)
        merge_rows, merges_more = jobs.list_(s, project_id=project, after=after.get("merges"), limit=PAGE,
                                             kind=merge.KIND.name)
        merge_jobs = [merges_api.to_api(j) for j in merge_rows]
        bake_rows, bakeoffs_more = jobs.list_(s, project_id=project, after=after.get("bakeoffs"), limit=PAGE,
                                              kind=bakeoff.KIND.name)
        bakeoff_jobs = [bakeoffs_api.to_api(s, j) for j in bake_rows]
        names = _suggestions(s, project)
    built = build(form, need_name=False)
    return page(request, "models.html", user, status_code=status, after=after, bases=_bases(), tuned=tuned,
                tuned_more=tuned_more, merged=merged, merged_more=merged_more, merge_jobs=merge_jobs,
                merges_more=merges_more, bakeoffs=bakeoff_jobs, bakeoffs_more=bakeoffs_more, names=names, form=form,
                errors=errors or {}, built=built, methods=methods(), dtypes=DTYPES, rows=range(ROWS))


def _bases() -> list[dict[str, str]]:
    return [{"name": n, "kind": "bundled" if n in registry.BUNDLED else "operator's",
             "about": registry.BUNDLED[n].description if n in registry.BUNDLED else "a model folder on the server"}
            for n in registry.base_names()]


def _suggestions(s, project_id: str) -> list[str]:
    """Model names for the merge form's fields: the bases, then the newest fine-tunes and merges (bounded)."""
    tuned, _ = models.fine_tuned_page(s, project_id, after=None, limit=SUGGESTIONS)
    merged, _ = models.merged_page(s, project_id, after=None, limit=SUGGESTIONS)
    return [*registry.base_names(), *(m.id for m in tuned), *(m.name for m in merged)]


@router.post("/models/merge/preview")
async def preview(request: Request, user: Acting):
    """The YAML the form would submit, and what is still missing (htmx swaps it in as the form changes)."""
    built = build(MergeForm.read(await request.form()), need_name=False)
    return fragment(request, "models_merge_preview.html", user, built=built)


@router.post("/models/merge")
async def start_merge(request: Request, state: StateDep, user: Acting):
    """Start the merge job, as `POST /v1/merges` does; the merge's page follows it."""
    form = MergeForm.read(await request.form())
    built = build(form)
    errors, status = dict(built.errors), 422
    if not errors:
        try:
            with state.db.session() as s:
                job = merge.KIND.accept(s, user.project, built.request)
            return RedirectResponse(f"/models/merges/{job.id}", status_code=303)
        except TuneforgeError as exc:
            key = "config_yaml" if form.config_yaml and exc.param == "config" and not isinstance(exc, NotFound) \
                else FIELD_OF.get(exc.param or "", exc.param if exc.param in ("name", "method") else "_")
            errors[key] = str(exc)
            status = status_of(exc)
    return _index(request, state, user, form=form, errors=errors, status=status)
