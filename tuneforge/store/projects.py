"""Projects and their API keys. A key is shown once, at creation; only its sha256 is stored. A revoked key is
refused from the next request on; an admin key manages every project's keys."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import and_, func, or_, select
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


def keys_page(s: Session, project_id: str, *, after: str | None = None, limit: int = 50) -> tuple[list[ApiKey], bool]:
    """One project's keys (revoked ones too), newest first, a page at a time by keyset: `after` is the id of the
    last key of the previous page (another project's id is ignored). Returns the page and whether more follow."""
    q = select(ApiKey).where(ApiKey.project_id == project_id)
    anchor = s.get(ApiKey, after) if after else None
    if anchor is not None and anchor.project_id == project_id:
        q = q.where(or_(ApiKey.created_at < anchor.created_at,
                        and_(ApiKey.created_at == anchor.created_at, ApiKey.id < anchor.id)))
    rows = list(s.scalars(q.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def active_keys(s: Session, project_id: str) -> int:
    """How many of the project's keys are not revoked."""
    return s.scalar(select(func.count()).select_from(ApiKey)
                    .where(ApiKey.project_id == project_id, ApiKey.revoked_at.is_(None))) or 0


def get_key(s: Session, key_id: str, *, project_id: str | None = None) -> ApiKey:
    """A key's row by id; with `project_id`, only that project's (another project's key is NotFound, as if it
    did not exist)."""
    row = s.get(ApiKey, key_id)
    if row is None or (project_id is not None and row.project_id != project_id):
        raise NotFound(f"No API key with id '{key_id}': `tuneforge keys list` shows the ids", param="key_id")
    return row


def revoke_key(s: Session, key_id: str, *, project_id: str | None = None) -> tuple[ApiKey, str]:
    """Refuse the key from now on (every request authenticates anew); revoking it again changes nothing. With
    `project_id`, only that project's key may be revoked (see `get_key`)."""
    row = get_key(s, key_id, project_id=project_id)
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
