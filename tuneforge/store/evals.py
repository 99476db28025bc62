"""Eval definitions: a name, the shape of the rows and the graders every run of it applies.

The runs are `eval` jobs (`tuneforge/jobs/eval.py`); this module keeps the definitions, checked against the
grader registry when they are created so a bad grader is a 400 now, not a failed job later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound, UserError
from tuneforge.evals import criteria, graders
from tuneforge.store import files
from tuneforge.store.db import new_id, now
from tuneforge.store.tables import Eval

# grader options that name a file (by the registry's convention, a name ending in `_file`)
FILE_OPTIONS = tuple(sorted({f for cls in graders.GRADERS.values() for f in cls.Spec.model_fields
                             if f.endswith("_file")}))


def create(s: Session, project_id: str, *, name: str | None, data_source_config: dict[str, Any],
           testing_criteria: list[dict[str, Any]], metadata: dict[str, str] | None) -> Eval:
    checked = criteria.check(testing_criteria)
    for i, c in enumerate(checked):
        for key in FILE_OPTIONS:
            if c.get(key) is not None:  # a tenant names an uploaded file, never a path on the server
                try:
                    files.get(s, str(c[key]), project_id=project_id)
                except NotFound:
                    raise UserError(f"testing_criteria[{i}].{key}: upload the file (purpose 'evals') and give its "
                                    "id", param=f"testing_criteria[{i}].{key}") from None
    row = Eval(id=new_id("eval_"), project_id=project_id, name=name or "eval", data_source_config=data_source_config,
               testing_criteria=checked, metadata_=metadata, created_at=now(), deleted=False)
    s.add(row)
    s.flush()
    return row


def with_paths(s: Session, project_id: str, testing_criteria: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The criteria with their file ids replaced by the files' paths, as a run's graders read them."""
    out = []
    for c in testing_criteria:
        c = dict(c)
        for key in FILE_OPTIONS:
            if c.get(key) is not None:
                c[key] = files.get(s, c[key], project_id=project_id).path
        out.append(c)
    return out


def get(s: Session, eval_id: str, project_id: str) -> Eval:
    row = s.get(Eval, eval_id)
    if row is None or row.project_id != project_id or row.deleted:
        raise NotFound(f"No eval found with id {eval_id}", param="eval_id", code="not_found")
    return row


def list_(s: Session, project_id: str, *, after: str | None, limit: int, order: str = "asc") -> tuple[list[Eval], bool]:
    q = select(Eval).where(Eval.project_id == project_id, Eval.deleted.is_(False))
    desc = order == "desc"
    q = q.order_by(Eval.created_at.desc(), Eval.id.desc()) if desc else q.order_by(Eval.created_at, Eval.id)
    if after and (anchor := s.get(Eval, after)) is not None and anchor.project_id == project_id:
        if desc:
            q = q.where((Eval.created_at < anchor.created_at)
                        | ((Eval.created_at == anchor.created_at) & (Eval.id < anchor.id)))
        else:
            q = q.where((Eval.created_at > anchor.created_at)
                        | ((Eval.created_at == anchor.created_at) & (Eval.id > anchor.id)))
    rows = list(s.scalars(q.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete(s: Session, eval_id: str, project_id: str) -> None:
    get(s, eval_id, project_id).deleted = True
