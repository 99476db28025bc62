"""Projects and their API keys. A key is shown once, at creation; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import Unauthorized
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


def create_key(s: Session, *, project: str) -> str:
    """A new API key for `project` (created if new); the plain key is returned and never stored."""
    proj = get_or_create(s, project)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    s.add(ApiKey(id=new_id("key_"), project_id=proj.id, hash=_hash(key), prefix=key[:10], created_at=now()))
    return key


def authenticate(s: Session, key: str | None) -> Project:
    """The project a key belongs to; Unauthorized for a missing or unknown key."""
    if not key:
        raise Unauthorized(
            "You didn't provide an API key. Pass it as 'Authorization: Bearer KEY' "
            "(create one with `tuneforge keys create`).", code="missing_api_key",
        )
    row = s.scalar(select(ApiKey).where(ApiKey.hash == _hash(key)))
    if row is None:
        shown = key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)
        raise Unauthorized(
            f"Incorrect API key provided: {shown}. Create one with `tuneforge keys create`.", code="invalid_api_key"
        )
    return s.get(Project, row.project_id)
