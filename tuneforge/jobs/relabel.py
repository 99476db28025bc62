"""The relabel job: re-answer every entry of a dataset with a teacher model, into a new dataset.

Accepted from `POST /v1/datasets/{id}/relabel`: the new dataset (status `relabeling`) is made with the job.
Answers are stored as they arrive, so a job that is requeued (its worker died) or rerun asks only for the
entries still missing. Each stored entry records the model that wrote its answer.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from tuneforge.capture import teacher, upstreams
from tuneforge.errors import ConfigError, UserError
from tuneforge.jobs.context import JobContext
from tuneforge.jobs.registry import JobKind
from tuneforge.store import datasets, jobs
from tuneforge.store.tables import Job, Project

PROGRESS_EVERY = 10  # answers between progress events


class RelabelSpec(BaseModel):
    """A relabel job as accepted."""

    dataset: str = Field(description="The new dataset the job fills.")
    source_dataset: str = Field(description="The dataset whose entries are re-answered.")
    model: str = Field(description="The teacher: a model an upstream serves.")
    concurrency: int = Field(description="Questions in flight at once.")
    max_attempts: int = Field(description="Tries per question before the entry counts as failed.")


class Relabel(JobKind):
    name = "relabel"
    noun = "relabel job"
    Spec = RelabelSpec
    id_prefix = "relabeljob-"

    def accept(self, s: Session, project: Project, request: Any, **where: str) -> Job:
        """Start a relabel from a RelabelCreate request; `where["dataset_id"]` is the dataset to relabel."""
        if upstreams.from_env().find(request.model) is None:
            raise UserError(f"no upstream serves `{request.model}`: start the server with TUNEFORGE_UPSTREAM_URL "
                            "or TUNEFORGE_UPSTREAMS naming it", param="model")
        ds = datasets.start_relabel(s, project.id, where["dataset_id"], model=request.model, name=request.name)
        spec = RelabelSpec(dataset=ds.id, source_dataset=where["dataset_id"], model=request.model,
                           concurrency=request.concurrency, max_attempts=request.max_attempts)
        job = jobs.submit(s, project_id=project.id, kind=self.name, spec=spec.model_dump())
        ds.job_id = job.id
        return job

    def run(self, ctx: JobContext) -> dict:
        spec: RelabelSpec = self.spec(ctx.job)
        upstream = upstreams.from_env().find(spec.model)
        if upstream is None:
            raise ConfigError(f"no upstream serves `{spec.model}`: set TUNEFORGE_UPSTREAM_URL or TUNEFORGE_UPSTREAMS "
                              "for the workers")
        with ctx.db.session() as s:
            parent = datasets.entries(s, spec.source_dataset)
            done = {e.position for e in datasets.entries(s, spec.dataset)}
        todo = [teacher.Question(e, e.messages[:-1], e.tools) for e in parent if e.position not in done]
        ctx.event(f"Relabeling {len(todo)} of {len(parent)} entries with {spec.model} "
                  f"({spec.concurrency} at a time)", data={"total": len(parent), "todo": len(todo)})
        answered, errors = _ask(ctx, spec, upstream, todo, len(done), len(parent))
        if errors:
            raise UserError(f"{len(errors)} of {len(parent)} entries got no answer from {spec.model} ({errors[0]}); "
                            "the answers so far stay in this dataset, but it cannot be exported: relabel the source "
                            "dataset again once the teacher answers")
        return {"dataset": spec.dataset, "answered": answered}

    def on_success(self, s: Session, job: Job, result: dict) -> None:
        datasets.finish_filling(s, self.spec(job).dataset, "ready")

    def on_failure(self, s: Session, job: Job, error: dict) -> None:
        datasets.finish_filling(s, self.spec(job).dataset, "failed")


KIND = Relabel()


def _ask(ctx: JobContext, spec: RelabelSpec, upstream: upstreams.Upstream, todo: list[teacher.Question],
         answered: int, total: int) -> tuple[int, list[str]]:
    """Ask the teacher every question, storing each answer as it arrives: (answers stored in all, errors)."""
    lock, counts, errors = threading.Lock(), {"answered": answered}, []

    def on_answer(q: teacher.Question, message: dict, by: str) -> None:
        ctx.check()
        with lock, ctx.db.session() as s:
            datasets.add_relabeled(s, spec.dataset, q.key, message, by)
            counts["answered"] += 1
            if counts["answered"] % PROGRESS_EVERY == 0 or counts["answered"] == total:
                ctx.event(f"{counts['answered']}/{total} answered", type="metrics",
                          data={"answered": counts["answered"], "total": total})

    def on_error(q: teacher.Question, message: str) -> None:
        errors.append(f"entry {q.key.position}: {message}")

    asyncio.run(teacher.ask_all(todo, upstream, spec.model, concurrency=spec.concurrency,
                                max_attempts=spec.max_attempts, on_answer=on_answer, on_error=on_error))
    return counts["answered"], errors
