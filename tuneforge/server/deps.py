"""What routes depend on: the app's state and the caller's project (from the bearer key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from tuneforge import limits as limits_
from tuneforge.server.serving import Engines
from tuneforge.store import projects
from tuneforge.store.db import Database
from tuneforge.store.tables import Project


@dataclass
class Settings:
    default_max_tokens: int = 2048
    upstream_timeout: float = 600.0  # seconds the proxy waits on an upstream ($TUNEFORGE_UPSTREAM_TIMEOUT)
    limits: limits_.Limits = field(default_factory=limits_.current)  # every bound (tuneforge/limits.py)

    @property
    def max_upload_bytes(self) -> int:
        return self.limits.max_upload_mb << 20

    @property
    def max_body_bytes(self) -> int:
        return self.limits.max_body_mb << 20


@dataclass
class State:
    db: Database
    engines: Engines
    settings: Settings = field(default_factory=Settings)


def get_state(request: Request) -> State:
    return request.app.state.tuneforge


def current_project(request: Request, state: Annotated[State, Depends(get_state)]) -> Project:
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else None
    with state.db.session() as s:
        return projects.authenticate(s, key)


StateDep = Annotated[State, Depends(get_state)]
ProjectDep = Annotated[Project, Depends(current_project)]
