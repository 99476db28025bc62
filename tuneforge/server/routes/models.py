"""Models: the bundled base models (every project sees them) and the project's own fine-tunes."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from sqlalchemy import select

from tuneforge.models import registry
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.protocol import ModelDeleted, ModelList, ModelObject
from tuneforge.server.serving import model_not_found
from tuneforge.store.tables import FineTunedModel

router = APIRouter(prefix="/v1/models", tags=["models"])
BASE_CREATED = 1_700_000_000  # bundled models have no creation time of ours: a fixed, honest "long ago"


def _base_models() -> list[ModelObject]:
    return [ModelObject(id=name, created=BASE_CREATED, owned_by="tuneforge") for name in registry.BUNDLED]


def _own(s, project) -> list[FineTunedModel]:
    q = select(FineTunedModel).where(FineTunedModel.project_id == project.id, FineTunedModel.deleted.is_(False))
    return list(s.scalars(q.order_by(FineTunedModel.created_at)))


@router.get("", response_model=ModelList)
def list_models(state: StateDep, project: ProjectDep):
    with state.db.session() as s:
        own = [ModelObject(id=m.id, created=m.created_at, owned_by=project.name) for m in _own(s, project)]
    return ModelList(data=_base_models() + own)


@router.get("/{model:path}", response_model=ModelObject)
def get_model(state: StateDep, project: ProjectDep, model: str):
    for base in _base_models():
        if base.id == model:
            return base
    with state.db.session() as s:
        row = s.get(FineTunedModel, model)
        if row is None or row.deleted or row.project_id != project.id:
            raise model_not_found(model)
        return ModelObject(id=row.id, created=row.created_at, owned_by=project.name)


@router.delete("/{model:path}", response_model=ModelDeleted)
def delete_model(state: StateDep, project: ProjectDep, model: str):
    """Delete a fine-tuned model: it stops being served and listed. Its job and files stay, for the record."""
    with state.db.session() as s:
        row = s.get(FineTunedModel, model)
        if row is None or row.deleted or row.project_id != project.id:
            raise model_not_found(model)
        row.deleted = True
        path = Path(row.path)
    state.engines.unload(path)
    return ModelDeleted(id=model)
