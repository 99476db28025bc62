"""What routes depend on: the app's state and the caller's project (from the bearer key)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from tuneforge import limits as limits_
from tuneforge.errors import RateLimited
from tuneforge.server.serving import Engines
from tuneforge.store import console_sessions, projects
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


class InFlight:
    """Each project's generation requests, and the sequences they generate or score, under way in this server
    process, against `project_requests_in_flight` and `project_sequences_in_flight` (429 past either): one
    project's flood waits its turn instead of filling every engine's batch and queue."""

    def __init__(self):
        self._requests: dict[str, int] = {}
        self._sequences: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, project_id: str, limits: limits_.Limits, sequences: int = 0) -> None:
        """One request (sequences=0), or `sequences` more for a request already counted."""
        with self._lock:
            if not sequences:
                n = self._requests.get(project_id, 0)
                if n >= limits.project_requests_in_flight:
                    raise RateLimited(f"This project has {n} requests in flight, its limit: wait for some to finish "
                                      "and retry.", retry_after=limits.retry_after_s,
                                      code="too_many_requests_in_flight")
                self._requests[project_id] = n + 1
                return
            n = self._sequences.get(project_id, 0)
            if n and n + sequences > limits.project_sequences_in_flight:
                raise RateLimited(f"This project has {n} sequences in flight and this request adds {sequences}; "
                                  f"its limit is {limits.project_sequences_in_flight}: wait for some to finish and "
                                  "retry.", retry_after=limits.retry_after_s, code="too_many_requests_in_flight")
            self._sequences[project_id] = n + sequences

    def release(self, project_id: str, sequences: int = 0) -> None:
        with self._lock:
            counts, k = (self._sequences, sequences) if sequences else (self._requests, 1)
            n = counts.get(project_id, k) - k
            if n > 0:
                counts[project_id] = n
            else:
                counts.pop(project_id, None)

    def __getitem__(self, project_id: str) -> int:
        return self._requests.get(project_id, 0)


class Slot:
    """A generation request's place among its project's (see `generation_slot`)."""

    def __init__(self, in_flight: InFlight, project_id: str, limits: limits_.Limits):
        self.in_flight, self.project_id, self.limits = in_flight, project_id, limits
        self.sequences = 0
        self._after: list = []

    def after(self, release) -> None:
        """Call `release` once the response has been sent (e.g. let go of the engine the request held)."""
        self._after.append(release)

    def hold(self, sequences: int) -> None:
        """Count the request's sequences (prompts x n) against the project's, until the response is sent."""
        if sequences <= 0:
            return
        self.in_flight.take(self.project_id, self.limits, sequences)
        self.sequences += sequences

    def release(self) -> None:
        for release in self._after:
            release()
        if self.sequences:
            self.in_flight.release(self.project_id, self.sequences)
        self.in_flight.release(self.project_id)


@dataclass
class State:
    db: Database
    engines: Engines
    settings: Settings = field(default_factory=Settings)
    in_flight: InFlight = field(default_factory=InFlight)


def get_state(request: Request) -> State:
    return request.app.state.tuneforge


def current_project(request: Request, state: Annotated[State, Depends(get_state)]) -> Project:
    """The bearer key's project; without a key, a signed-in web console's (its session cookie, and its CSRF token
    in X-CSRF-Token: the console's own scripts, e.g. the playground, call the API like this)."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else None
    with state.db.session() as s:
        if key is None and (project := console_sessions.project_of(
                s, request.cookies.get(console_sessions.COOKIE), request.headers.get(console_sessions.CSRF_HEADER))):
            return project
        return projects.authenticate(s, key)


async def generation_slot(state: Annotated[State, Depends(get_state)],
                          project: Annotated[Project, Depends(current_project)]):
    """One of the project's `project_requests_in_flight`, held until the response has been sent (a stream to
    its end): the dependency's exit runs after the response (scope "request")."""
    state.in_flight.take(project.id, state.settings.limits)
    slot = Slot(state.in_flight, project.id, state.settings.limits)
    try:
        yield slot
    finally:
        slot.release()


StateDep = Annotated[State, Depends(get_state)]
ProjectDep = Annotated[Project, Depends(current_project)]
GenerationSlot = Annotated[Slot, Depends(generation_slot, scope="request")]
