"""Models a project has: the one place that says which exist, which a project may use, and where the weights are.

The routes (`/v1/models`), the server's engine lookup, the proxy's "is this model ours?" check and the
fine-tune kind's choice of a base all ask here. A model comes from one of these sources:

- a bundled base (`models/registry.py`), which every project sees;
- a project's fine-tuned model (`ft:{base}:{project}:{suffix}:{job}`, a row of fine_tuned_models), and
  its checkpoints (`...:ckpt-step-N`), which serve but are not listed;
- a project's merged model (`merge:{name}`, a row of merged_models): a full model folder, or an adapter
  on a base (an adapter merge), served either way like a fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound
from tuneforge.jobs import registry as kinds
from tuneforge.models import registry
from tuneforge.store.db import Database, new_id, now
from tuneforge.store.tables import Checkpoint, FineTunedModel, Job, MergedModel

BASE_CREATED = 1_700_000_000  # bundled models have no creation time of ours: a fixed, honest "long ago"
MERGE_PREFIX = "merge:"
HOSTED_PREFIXES = ("ft:", MERGE_PREFIX)  # names of the models made here (checkpoints included)


@dataclass(frozen=True)
class Model:
    """A model a project can use, whatever made it."""

    id: str
    source: Literal["base", "fine_tune", "checkpoint", "merge"]
    created_at: int
    project_id: str | None  # None for bundled bases, which belong to every project
    path: Path | None  # the weights folder; None for a bundled base (materialized on first use)
    pruning_rules: tuple[str, ...] = ()  # texts cut from requests, as from the model's training data


@dataclass(frozen=True)
class Weights:
    """Where a model's weights are, as an engine needs them."""

    base: str  # the engine's model folder
    adapter: Path | None  # a LoRA adapter on it, or None
    pruning_rules: tuple[str, ...] = ()


def model_not_found(name: str) -> NotFound:
    return NotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


def is_hosted(name: str) -> bool:
    """Whether a name is one this server serves rather than an upstream's. By name alone (no I/O: the proxy
    asks for every request, on the event loop): a name in our form that a project lacks gets our 404."""
    return registry.is_base(name) or name.startswith(HOSTED_PREFIXES)


def list_(s: Session, project_id: str) -> list[Model]:
    """The bundled bases, then the project's fine-tuned and merged models, oldest first."""
    q = (select(FineTunedModel).where(FineTunedModel.project_id == project_id, FineTunedModel.deleted.is_(False))
         .order_by(FineTunedModel.created_at))
    merged = (select(MergedModel).where(MergedModel.project_id == project_id, MergedModel.deleted.is_(False))
              .order_by(MergedModel.created_at))
    made = sorted([*map(_fine_tune, s.scalars(q)), *map(_merge, s.scalars(merged))], key=lambda m: m.created_at)
    return [*map(_base, registry.base_names()), *made]


def fine_tuned_page(s: Session, project_id: str, *, after: str | None,
                    limit: int) -> tuple[list[FineTunedModel], bool]:
    """One page of the project's fine-tuned models (with their job and base), newest first; keyset on `after`,
    the previous page's last id."""
    return _page(s, FineTunedModel, project_id, after, limit)


def merged_page(s: Session, project_id: str, *, after: str | None, limit: int) -> tuple[list[MergedModel], bool]:
    """One page of the project's merged models (with their merge job), newest first; keyset on `after`."""
    return _page(s, MergedModel, project_id, after, limit)


def _page(s: Session, table, project_id: str, after: str | None, limit: int) -> tuple[list, bool]:
    q = select(table).where(table.project_id == project_id, table.deleted.is_(False))
    anchor = s.get(table, after) if after else None
    if anchor is not None and anchor.project_id == project_id:
        q = q.where((table.created_at < anchor.created_at)
                    | ((table.created_at == anchor.created_at) & (table.id < anchor.id)))
    rows = list(s.scalars(q.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def find(s: Session, name: str, project_id: str, *, checkpoints: bool = False) -> Model | None:
    """A model the project can use by this name (checkpoints too, when asked), or None."""
    if registry.is_base(name):
        return _base(name)
    if name.startswith(MERGE_PREFIX):
        merged = merged_row(s, name, project_id)
        return _merge(merged) if merged is not None else None
    row = _fine_tune_row(s, name, project_id)
    if row is not None:
        return _fine_tune(row)
    return _find_checkpoint(s, name, project_id) if checkpoints else None


def get(s: Session, name: str, project_id: str) -> Model:
    found = find(s, name, project_id)
    if found is None:
        raise model_not_found(name)
    return found


def delete(s: Session, name: str, project_id: str) -> Path:
    """Stop listing and serving a fine-tuned or merged model; its job and folder stay. Returns the folder (to
    unload)."""
    row = merged_row(s, name, project_id) if name.startswith(MERGE_PREFIX) else _fine_tune_row(s, name, project_id)
    if row is None:
        raise model_not_found(name)
    row.deleted = True
    return Path(row.path)


def resolve(db: Database, name: str, project_id: str) -> Weights:
    """Where a model name's weights are, checkpoints included; NotFound for unknown names and other projects'
    models. Takes the database rather than a session: the files are looked at (a bundled base materialized,
    the first time: minutes) after the lookup's transaction has ended."""
    if registry.is_base(name):
        return Weights(str(registry.materialize(name)), None)
    with db.session() as s:
        found = find(s, name, project_id, checkpoints=True)
    if found is None:
        raise model_not_found(name)
    if (found.path / "adapter_config.json").exists():
        return Weights(registry.resolve(str(found.path)).base, found.path, found.pruning_rules)
    return Weights(str(found.path), None, found.pruning_rules)


# --- sources
def _base(name: str) -> Model:
    return Model(name, "base", BASE_CREATED, None, None)


def _fine_tune(row: FineTunedModel) -> Model:
    return Model(row.id, "fine_tune", row.created_at, row.project_id, Path(row.path), tuple(row.pruning_rules or ()))


def _fine_tune_row(s: Session, name: str, project_id: str) -> FineTunedModel | None:
    row = s.get(FineTunedModel, name)
    return row if row is not None and row.project_id == project_id and not row.deleted else None


def _merge(row: MergedModel) -> Model:
    return Model(row.name, "merge", row.created_at, row.project_id, Path(row.path))


def merged_row(s: Session, name: str, project_id: str) -> MergedModel | None:
    return s.scalar(select(MergedModel).where(MergedModel.project_id == project_id, MergedModel.name == name,
                                              MergedModel.deleted.is_(False)))


def _find_checkpoint(s: Session, name: str, project_id: str) -> Model | None:
    ckpt = s.scalar(select(Checkpoint).where(Checkpoint.model_name == name))
    if ckpt is None:
        return None
    job = s.get(Job, ckpt.job_id)
    deleted = s.scalar(select(FineTunedModel.deleted).where(FineTunedModel.job_id == job.id))
    if job.project_id != project_id or deleted or not Path(ckpt.path).exists():
        return None
    rules = kinds.get(job.kind).spec(job).pruning_rules  # checkpoints are fine-tune jobs' (and theirs apply)
    return Model(name, "checkpoint", ckpt.created_at, job.project_id, Path(ckpt.path), tuple(rules))


# --- what fine-tune jobs make
def add_fine_tune(s: Session, *, model_id: str, project_id: str, job_id: str, base: str, path: str,
                  pruning_rules: list[str] | None = None) -> None:
    s.add(FineTunedModel(id=model_id, project_id=project_id, job_id=job_id, base=base, path=path,
                         created_at=now(), deleted=False, pruning_rules=pruning_rules or None))


def add_checkpoint(s: Session, *, job_id: str, step: int, model_name: str, path: str, metrics: dict) -> None:
    if s.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)) is None:
        s.add(Checkpoint(id=new_id("ftckpt_"), job_id=job_id, step=step, model_name=model_name, path=path,
                         metrics=metrics, created_at=now()))


def add_merge(s: Session, *, name: str, project_id: str, job_id: str, kind: str, path: str) -> None:
    s.add(MergedModel(id=new_id("mm-"), name=name, project_id=project_id, job_id=job_id, kind=kind, path=path,
                      created_at=now(), deleted=False))


def checkpoints(s: Session, job_id: str, *, after: str | None, limit: int) -> tuple[list[Checkpoint], bool]:
    """A job's checkpoints, newest first; one whose folder the trainer pruned is no longer listed."""
    rows = [c for c in s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)
                                 .order_by(Checkpoint.step.desc())) if Path(c.path).exists()]
    if after:
        ids = [c.id for c in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else rows
    return rows[:limit], len(rows) > limit
