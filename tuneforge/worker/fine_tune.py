"""The fine-tune job: TrainConfig from the job's spec, training with resume, events and checkpoints stored.

The job's folder (`jobs/{id}`) is the trainer's output folder, and every attempt runs with `resume=True`:
a second attempt after a lost worker continues from the newest checkpoint in it.
"""

from __future__ import annotations

import time

from sqlalchemy.orm import Session

from tuneforge.progress import Event
from tuneforge.store import jobs
from tuneforge.store.tables import Job
from tuneforge.training.config import TrainConfig
from tuneforge.training.trainer import train
from tuneforge.worker.loop import JobContext

METRIC_EVENT_EVERY_S = 1.0  # at most one metrics event per second (and always the last step)


def config(job: Job) -> TrainConfig:
    spec = job.spec
    return TrainConfig(
        **spec.get("train_config", {}), model=spec["base_model"], data=spec["training_path"],
        validation=spec.get("validation_path"), out=job.out_dir, resume=True,
    )


class _Reporter:
    """The trainer's progress callback for a job: events, checkpoints, and a stop check at every event."""

    def __init__(self, ctx: JobContext):
        self.ctx, self.job = ctx, ctx.job
        self.name = ctx.job.spec["fine_tuned_model"]
        self.metrics: dict = {}
        self.last_event = 0.0

    def __call__(self, ev: Event) -> None:
        self.ctx.check()
        if ev.kind == "start":
            what = f"Resuming from checkpoint at step {ev.step}: " if ev.step else "Fine-tuning started: "
            self.ctx.event(what + ev.message, data={"step": ev.step, "total_steps": ev.total})
        elif ev.kind == "progress":
            self.metrics = ev.metrics
            self._metrics_event(ev)
        elif ev.kind == "checkpoint":
            with self.ctx.db.session() as s:
                jobs.add_checkpoint(s, job_id=self.job.id, step=ev.step, model_name=f"{self.name}:ckpt-step-{ev.step}",
                                    path=ev.message, metrics=self.metrics)
                jobs.set_result(s, self.job.id, self.ctx.worker_id, trained_tokens=self.metrics.get("trained_tokens"))
            self.ctx.event(f"Checkpoint created at step {ev.step}", data={"step": ev.step})
        elif ev.kind == "message" and ev.message:
            self.ctx.event(ev.message)

    def _metrics_event(self, ev: Event) -> None:
        now = time.monotonic()
        if now - self.last_event < METRIC_EVENT_EVERY_S and ev.step != ev.total:
            return
        self.last_event = now
        m = ev.metrics
        msg = f"Step {ev.step}/{ev.total}: training loss={m.get('train_loss', 0):.4f}"
        if "valid_loss" in m:
            msg += f", validation loss={m['valid_loss']:.4f}"
        self.ctx.event(msg, type="metrics", data={**m, "total_steps": ev.total})


def run(ctx: JobContext) -> dict:
    reporter = _Reporter(ctx)
    result = train(config(ctx.job), on_event=reporter)
    ctx.event(f"New fine-tuned model created: {reporter.name}", data={"model": reporter.name})
    return {"fine_tuned_model": reporter.name, "trained_tokens": result.trained_tokens, "metrics": result.metrics}


def on_success(s: Session, job: Job, result: dict) -> None:
    jobs.register_model(s, model_id=result["fine_tuned_model"], project_id=job.project_id, job_id=job.id,
                        base=job.spec["model"], path=job.out_dir, pruning_rules=job.spec.get("pruning_rules"))
