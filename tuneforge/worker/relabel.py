"""The relabel job: re-answer every entry of a dataset with a teacher model, into a new dataset.

Answers are stored as they arrive, so a job that is requeued (its worker died) or rerun asks only for
the entries still missing. Each stored entry records the model that wrote its answer.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.orm import Session

from tuneforge.capture import teacher, upstreams
from tuneforge.errors import ConfigError, UserError
from tuneforge.store import datasets
from tuneforge.store.tables import Job
from tuneforge.worker.loop import JobContext

PROGRESS_EVERY = 10  # answers between progress events


def run(ctx: JobContext) -> dict:
    spec = ctx.job.spec
    upstream = upstreams.from_env().find(spec["model"])
    if upstream is None:
        raise ConfigError(f"no upstream serves `{spec['model']}`: set TUNEFORGE_UPSTREAM_URL or TUNEFORGE_UPSTREAMS "
                          "for the workers")
    with ctx.db.session() as s:
        parent = datasets.entries(s, spec["source_dataset"])
        done = {e.position for e in datasets.entries(s, spec["dataset"])}
    todo = [teacher.Question(e, e.messages[:-1], e.tools) for e in parent if e.position not in done]
    ctx.event(f"Relabeling {len(todo)} of {len(parent)} entries with {spec['model']} "
              f"({spec['concurrency']} at a time)", data={"total": len(parent), "todo": len(todo)})
    lock, counts, errors = threading.Lock(), {"answered": len(done)}, []

    def on_answer(q: teacher.Question, message: dict, by: str) -> None:
        ctx.check()
        with lock, ctx.db.session() as s:
            datasets.add_relabeled(s, spec["dataset"], q.key, message, by)
            counts["answered"] += 1
            if counts["answered"] % PROGRESS_EVERY == 0 or counts["answered"] == len(parent):
                ctx.event(f"{counts['answered']}/{len(parent)} answered", type="metrics",
                          data={"answered": counts["answered"], "total": len(parent)})

    def on_error(q: teacher.Question, message: str) -> None:
        errors.append(f"entry {q.key.position}: {message}")

    asyncio.run(teacher.ask_all(todo, upstream, spec["model"], concurrency=spec["concurrency"],
                                max_attempts=spec["max_attempts"], on_answer=on_answer, on_error=on_error))
    if errors:
        raise UserError(f"{len(errors)} of {len(parent)} entries got no answer from {spec['model']} ({errors[0]}); "
                        "the answers so far stay in this dataset, but it cannot be exported: relabel the source "
                        "dataset again once the teacher answers")
    return {"dataset": spec["dataset"], "answered": counts["answered"]}


def on_success(s: Session, job: Job, result: dict) -> None:
    datasets.finish_relabel(s, job.spec["dataset"], "ready")


def on_failure(s: Session, job: Job, error: dict) -> None:
    datasets.finish_relabel(s, job.spec["dataset"], "failed")
