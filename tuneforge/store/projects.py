"""Projects and their API keys. A key is shown once, at creation; only its sha256 is stored. A revoked key is
refused from the next request on; an admin key manages every project's keys."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import Forbidden, NotFound, Unauthorized
from tuneforge.store.db import new_id, now
from tuneforge.store.tables import ApiKey, Project

KEY_PREFIX = "tf-"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create(s: Session, name: str) -> Project:
    project = s.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(id=new_id("proj_"), name=name, created_at=now())
        s.add(project)
        s.flush()
    return project


def new_key(s: Session, *, project: str, admin: bool = False) -> tuple[ApiKey, str]:
    """A new API key for `project` (created if new): its row, and the plain key, which is never stored. An admin
    key is also a key of its project, and may list, create and revoke every project's keys."""
    proj = get_or_create(s, project)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key_"), project_id=proj.id, hash=_hash(key), prefix=key[:10], created_at=now(),
                 admin=admin)
    s.add(row)
    s.flush()
    return row, key


def create_key(s: Session, *, project: str, admin: bool = False) -> str:
    return new_key(s, project=project, admin=admin)[1]


def list_keys(s: Session, *, project: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key (revoked ones too) with its project's name, oldest first; only `project`'s if given."""
    q = select(ApiKey, Project.name).join(Project, Project.id == ApiKey.project_id)
    if project is not None:
        if s.scalar(select(Project.id).where(Project.name == project)) is None:
            raise NotFound(f"No project named '{project}': `tuneforge keys list` shows every key's project",
                           param="project")
        q = q.where(Project.name == project)
    return [(row, name) for row, name in s.execute(q.order_by(ApiKey.created_at, ApiKey.id))]


def revoke_key(s: Session, key_id: str) -> tuple[ApiKey, str]:
    """Refuse the key from now on (every request authenticates anew); revoking it again changes nothing."""
    row = s.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"No API key with id '{key_id}': `tuneforge keys list` shows the ids", param="key_id")
    if row.revoked_at is None:
        row.revoked_at = now()
    return row, s.get(Project, row.project_id).name


def key_of(s: Session, key: str | None) -> ApiKey:
    """The stored row of a key in use; Unauthorized for a missing, unknown or revoked key."""
    if not key:
        raise Unauthorized(
            "You didn't provide an API key. Pass it as 'Authorization: Bearer KEY' "
            "(create one with `tuneforge keys create`).", code="missing_api_key",
        )
    row = s.scalar(select(ApiKey).where(ApiKey.hash == _hash(key)))
    shown = key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)
    if row is None:
        raise Unauthorized(
            f"Incorrect API key provided: {shown}. Create one with `tuneforge keys create`.", code="invalid_api_key"
        )
    if row.revoked_at is not None:
        raise Unauthorized(f"The API key {shown} has been revoked: use another key, or create one with "
                           "`tuneforge keys create`.", code="revoked_api_key")
    return row


def authenticate(s: Session, key: str | None) -> Project:
    """The project a key belongs to; Unauthorized for a missing, unknown or revoked key."""
    return s.get(Project, key_of(s, key).project_id)


def authenticate_admin(s: Session, key: str | None) -> ApiKey:
    """An admin key's row; Unauthorized as `authenticate`, Forbidden for a project key."""
    row = key_of(s, key)
    if not row.admin:
        raise Forbidden("This route needs an admin key, and yours is a project key: create an admin key with "
                        "`tuneforge keys create --admin`.", code="admin_key_required")
    return row
