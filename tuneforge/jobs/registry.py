"""Job kinds by name: what the queue, the worker and the routes know about a kind of job.

A kind is a `JobKind` instance, `KIND`, in its own module of this package. Adding one (an eval, a merge) is
that module plus its name in BUILT_IN; `register` adds one from elsewhere (a test, a plugin).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from tuneforge.errors import NotFound, UserError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tuneforge.jobs.context import JobContext
    from tuneforge.store.tables import Job, Project

BUILT_IN = ("fine_tune", "relabel", "eval", "merge", "bakeoff", "self_play")  # tuneforge.jobs modules defining KIND


class JobKind:
    """One kind of job: how it is named, what its spec is, how it is accepted and how it runs.

    The store's queue takes ids, event ids and messages from here; `accept` runs in a route, `run` and the
    hooks in a worker.
    """

    name: ClassVar[str]  # the jobs table's `kind` and the registry key, e.g. "fine_tune"
    noun: ClassVar[str]  # for messages, e.g. "fine-tuning job"
    Spec: ClassVar[type[BaseModel]]  # the job's parameters as accepted; stored as the job's `spec`
    id_prefix: ClassVar[str] = "job-"
    event_prefix: ClassVar[str] = "jobevent-"
    id_param: ClassVar[str] = "job_id"  # the request parameter an unknown job id is reported against
    created_message: ClassVar[str] = "Job created"  # the job's first event
    queued_message: ClassVar[str] = "Job queued"

    def spec(self, job: Job) -> Any:
        """The job's spec, typed (an instance of `Spec`)."""
        return self.Spec.model_validate(job.spec)

    def accept(self, s: Session, project: Project, request: Any, **where: str) -> Job:
        """Validate an API request and create and queue its job (`store.jobs.submit`), in the caller's
        transaction. Raise UserError / NotFound / Conflict naming the bad parameter before any job exists.
        `where` carries what the URL names (a relabel's source dataset)."""
        raise NotImplementedError

    def run(self, ctx: JobContext) -> dict:
        """Do the work, in a worker; return the job's result. Call `ctx.check()` often (it raises JobStopped
        once the job is cancelled or taken over) and report with `ctx.event(...)`."""
        raise NotImplementedError

    def on_success(self, s: Session, job: Job, result: dict) -> None:
        """Runs in the transaction that marks the job succeeded (register what it made)."""

    def on_failure(self, s: Session, job: Job, error: dict) -> None:
        """Runs in the transaction that marks the job failed."""

    def not_found(self, job_id: str) -> NotFound:
        return NotFound(f"No {self.noun} found with id {job_id}", param=self.id_param, code="not_found")


_kinds: dict[str, JobKind] = {}
_loaded = False


def register(kind: JobKind) -> JobKind:
    _kinds[kind.name] = kind
    return kind


def _all() -> dict[str, JobKind]:
    global _loaded
    if not _loaded:
        for module in BUILT_IN:
            register(importlib.import_module(f"tuneforge.jobs.{module}").KIND)
        _loaded = True
    return _kinds


def get(name: str) -> JobKind:
    kinds = _all()
    if name not in kinds:
        raise UserError(f"unknown job kind '{name}': use one of {', '.join(sorted(kinds))}", param="kind")
    return kinds[name]


def names() -> tuple[str, ...]:
    return tuple(_all())
