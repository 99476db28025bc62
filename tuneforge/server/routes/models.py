"""Models: the bundled base models (every project sees them) and the project's own fine-tunes."""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.protocol import ModelDeleted, ModelList, ModelObject
from tuneforge.store import models
from tuneforge.store.tables import Project

router = APIRouter(prefix="/v1/models", tags=["models"])


def to_api(model: models.Model, project: Project) -> ModelObject:
    owner = "tuneforge" if model.project_id is None else project.name
    return ModelObject(id=model.id, created=model.created_at, owned_by=owner)


@router.get("", response_model=ModelList)
def list_models(state: StateDep, project: ProjectDep):
    with state.db.session() as s:
        return ModelList(data=[to_api(m, project) for m in models.list_(s, project.id)])


@router.get("/{model:path}", response_model=ModelObject)
def get_model(state: StateDep, project: ProjectDep, model: str):
    """A model, or a fine-tune's checkpoint (`...:ckpt-step-N`): not listed, but served, so retrievable."""
    with state.db.session() as s:
        found = models.find(s, model, project.id, checkpoints=True)
    if found is None:
        raise models.model_not_found(model)
    return to_api(found, project)


@router.delete("/{model:path}", response_model=ModelDeleted)
def delete_model(state: StateDep, project: ProjectDep, model: str):
    """Delete a fine-tuned model: it stops being served and listed. Its job and files stay, for the record."""
    with state.db.session() as s:
        path = models.delete(s, model, project.id)
    state.engines.unload(path)
    return ModelDeleted(id=model)
