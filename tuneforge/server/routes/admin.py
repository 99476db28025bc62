"""Key management for an admin key (`tuneforge keys create --admin`): list, create and revoke every project's
keys. A project key gets 403. Keys are checked on every request, so a revoked key's next request is refused."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from tuneforge.server.admin_protocol import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyObject
from tuneforge.server.deps import StateDep
from tuneforge.store import projects
from tuneforge.store.tables import ApiKey

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])


def admin_key(request: Request, state: StateDep) -> ApiKey:
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else None
    with state.db.session() as s:
        return projects.authenticate_admin(s, key)


AdminDep = Annotated[ApiKey, Depends(admin_key)]


def to_api(row: ApiKey, project: str) -> ApiKeyObject:
    return ApiKeyObject(id=row.id, project=project, prefix=row.prefix, admin=row.admin, created_at=row.created_at,
                        revoked_at=row.revoked_at)


@router.get("", response_model=ApiKeyList)
def list_keys(state: StateDep, _admin: AdminDep, project: Annotated[str | None, Query()] = None):
    """Every key, revoked ones too, oldest first (only `project`'s if given)."""
    with state.db.session() as s:
        return ApiKeyList(data=[to_api(row, name) for row, name in projects.list_keys(s, project=project)])


@router.post("", response_model=ApiKeyCreated)
def create_key(state: StateDep, _admin: AdminDep, body: ApiKeyCreate):
    """A new key for a project (created if new); the answer is the only place the key is ever shown."""
    with state.db.session() as s:
        row, key = projects.new_key(s, project=body.project, admin=body.admin)
        return ApiKeyCreated(**to_api(row, body.project).model_dump(), key=key)


@router.post("/{key_id}/revoke", response_model=ApiKeyObject)
def revoke_key(state: StateDep, _admin: AdminDep, key_id: str):
    """Refuse the key from its next request on; revoking a revoked key changes nothing."""
    with state.db.session() as s:
        return to_api(*projects.revoke_key(s, key_id))
