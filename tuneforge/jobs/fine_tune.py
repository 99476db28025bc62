"""The fine-tune job: OpenAI's fine-tuning job, accepted from `POST /v1/fine_tuning/jobs`, run as a training run.

Accepting checks the files (or writes a dataset's split out as one), the base model and the hyperparameters
(OpenAI's three, plus the TrainConfig fields declared for the API) and names the model, before anything is
queued. Running: the job's folder (`jobs/{id}`) is the trainer's output folder, and every attempt runs with
`resume=True`, so a second attempt after a lost worker continues from the newest checkpoint in it. Before the
trainer writes a checkpoint (or the model) the job checks that the worker still holds it and that its project
is within its disk quota. Once the trainer has planned the run, the job reports the hyperparameters it
resolved ("auto" made concrete), as OpenAI does.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound, UserError
from tuneforge.jobs.context import JobContext
from tuneforge.jobs.registry import JobKind
from tuneforge.models import registry
from tuneforge.progress import Event
from tuneforge.store import datasets, files, jobs, models, quotas
from tuneforge.store.db import new_id
from tuneforge.store.tables import Job, Project
from tuneforge.training.config import TrainConfig

log = logging.getLogger("tuneforge.worker")
METRIC_EVENT_EVERY_S = 1.0  # at most one metrics event per second (always the last step and validation steps)


class FineTuneSpec(BaseModel):
    """A fine-tuning job as accepted."""

    model: str = Field(description="The base as the request named it: a bundled base or a fine-tuned model.")
    base_model: str = Field(description="What the trainer loads: the bundled base's name or a fine-tune's folder.")
    training_file: str
    training_path: str
    validation_file: str | None = None
    validation_path: str | None = None
    suffix: str | None = None
    seed: int
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="As the request gave them.")
    train_config: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields they amount to.")
    pruning_rules: list[str] = Field(default_factory=list, description="A dataset's; the model applies them.")
    fine_tuned_model: str = Field(description="The name the model gets when the job succeeds.")
    method: Literal["supervised", "dpo"] = Field("supervised", description="OpenAI's method type.")

    def config(self, out_dir: str) -> TrainConfig:
        return TrainConfig(**self.train_config, model=self.base_model, data=self.training_path,
                           validation=self.validation_path, out=out_dir, resume=True)


class FineTune(JobKind):
    name = "fine_tune"
    noun = "fine-tuning job"
    Spec = FineTuneSpec
    id_prefix = "ftjob-"
    event_prefix = "ftevent-"
    id_param = "fine_tuning_job_id"
    created_message = "Validating training file"
    queued_message = "Files validated, moving job to queued state"

    def accept(self, s: Session, project: Project, request: Any, **where: str) -> Job:
        """Create and queue a job from a FineTuningJobCreate request."""
        shown, loadable = _base(s, request.model, project.id)
        method = request.method.type if request.method is not None else "supervised"
        rules: list[str] = []
        train_file = _training_file(s, project, request.training_file, "training_file", "train", rules)
        _check_format(train_file, method, "training_file")
        valid_file = (_training_file(s, project, request.validation_file, "validation_file", "test", rules)
                      if request.validation_file else None)
        if valid_file is not None:
            _check_format(valid_file, method, "validation_file")
        hyper = request.hyperparameters
        chosen = getattr(request.method, method, None) if request.method is not None else None
        if chosen is not None:
            hyper = chosen.hyperparameters
        hyper_dict = hyper.model_dump() if hyper is not None else {}
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        job_id = new_id(self.id_prefix)
        spec = FineTuneSpec(
            model=shown, base_model=loadable, training_file=train_file.id, training_path=train_file.path,
            validation_file=valid_file.id if valid_file else None,
            validation_path=valid_file.path if valid_file else None, suffix=request.suffix, seed=seed,
            metadata=request.metadata, integrations=request.integrations, hyperparameters=hyper_dict,
            train_config=train_config(hyper_dict, seed, method), pruning_rules=rules,
            fine_tuned_model=self.model_name(shown, project, request.suffix, job_id), method=method,
        )
        return jobs.submit(s, project_id=project.id, kind=self.name, spec=spec.model_dump(mode="json"), job_id=job_id)

    def model_name(self, base: str, project: Project, suffix: str | None, job_id: str) -> str:
        """`ft:{base}:{project}:{suffix}:{job}`, OpenAI's form; a fine-tune of a fine-tune names the first base."""
        base = base.split(":")[1] if base.startswith("ft:") else base.replace(":", "-")  # merge:x -> merge-x
        slug = re.sub(r"[^a-z0-9-]+", "-", project.name.lower()).strip("-") or "project"
        return f"ft:{base}:{slug}:{suffix or ''}:{job_id.removeprefix(self.id_prefix)[:12]}"

    def run(self, ctx: JobContext) -> dict:
        from tuneforge.training.trainer import train  # torch: only where jobs run

        reporter = _Reporter(ctx, self.spec(ctx.job))
        result = train(reporter.config, on_event=reporter, may_write=reporter.may_write)
        ctx.event(f"New fine-tuned model created: {reporter.name}", data={"model": reporter.name})
        return {"fine_tuned_model": reporter.name, "trained_tokens": result.trained_tokens, "metrics": result.metrics,
                "hyperparameters": reporter.hyperparameters}

    def on_success(self, s: Session, job: Job, result: dict) -> None:
        spec = self.spec(job)
        models.add_fine_tune(s, model_id=result["fine_tuned_model"], project_id=job.project_id, job_id=job.id,
                             base=spec.model, path=job.out_dir, pruning_rules=spec.pruning_rules)


KIND = FineTune()


# --- accepting
def train_config(hyper: dict, seed: int, method: str = "supervised") -> dict:
    """OpenAI hyperparameters (+ TrainConfig's API fields) as TrainConfig fields; UserError naming the bad one."""
    hyper, allowed = dict(hyper), TrainConfig.hyperparameters()
    cfg: dict = {"seed": seed, "method": "dpo" if method == "dpo" else "sft"}
    if hyper.get("method") in ("lora", "full"):  # its name before DPO
        hyper["weights"] = hyper.pop("method")
    if hyper.get("beta") == "auto":
        del hyper["beta"]
    if (epochs := hyper.pop("n_epochs", "auto")) != "auto":
        cfg["epochs"] = epochs
    if (batch := hyper.pop("batch_size", "auto")) != "auto":
        cfg["batch_size"] = batch
    multiplier = hyper.pop("learning_rate_multiplier", "auto")
    for key, value in hyper.items():
        if key not in allowed:
            raise UserError(f"Unknown hyperparameter '{key}': use batch_size, learning_rate_multiplier, n_epochs "
                            f"or one of {', '.join(allowed)}", param=f"hyperparameters.{key}")
        cfg[key] = value
    try:
        probe = TrainConfig(model="m", data=Path("d"), out=Path("o"), **cfg)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UserError(f"Invalid hyperparameter '{field}': {err['msg']}", param=f"hyperparameters.{field}") from None
    if multiplier != "auto":
        cfg["learning_rate"] = probe.lr() * float(multiplier)
    return cfg


def _base(s: Session, model: str, project_id: str) -> tuple[str, str]:
    """(name shown as the job's model, what the trainer loads): a bundled base, or a fine-tune to continue."""
    found = models.find(s, model, project_id)
    if found is not None:
        return model, str(found.path) if found.path is not None else model
    raise NotFound(f"The model `{model}` does not exist or you do not have access to it: fine-tune one of "
                   f"{', '.join(registry.base_names())} or one of your fine-tuned or merged models", param="model",
                   code="model_not_found")


def _training_file(s: Session, project: Project, file_id: str, param: str, split: str, rules: list[str]):
    """An uploaded file, or a dataset's split written out as one (its pruning rules applied, and noted in
    `rules` for the model to apply when served)."""
    if file_id.startswith("ds-"):
        try:
            ds = datasets.get(s, file_id, project.id)
        except NotFound as exc:
            raise NotFound(str(exc), param=param, code=exc.code) from None
        lines = datasets.export_lines(s, ds, split)
        if not lines:
            raise UserError(f"dataset {file_id} has no {split} entries", param=param)
        rules[:] = ds.pruning_rules or []
        content = ("\n".join(lines) + "\n").encode()
        return files.create(s, project_id=project.id, filename=f"{ds.id}-{split}.jsonl", purpose="fine-tune",
                            content=content)
    try:
        row = files.get(s, file_id, project_id=project.id)
    except NotFound:
        raise NotFound(f"Could not find file {file_id}: upload it with purpose 'fine-tune' first", param=param,
                       code="file_not_found") from None
    if row.purpose != "fine-tune":
        raise UserError(f"File {file_id} has purpose '{row.purpose}': upload training files with purpose "
                        "'fine-tune'", param=param, code="invalid_file_purpose")
    return row


def _check_format(row, method: str, param: str) -> None:
    """The file's format (its first row decides) must be the method's: preference pairs for dpo, chat otherwise."""
    from tuneforge.data.preference import format_of

    with open(row.path, "rb") as f:
        first = next((line for line in f if line.strip()), b"{}")
    try:
        is_pairs = format_of(json.loads(first)) != "chat"
    except ValueError:
        return  # (uploads are checked line by line: nothing unreadable gets this far)
    if method == "dpo" and not is_pairs:
        raise UserError(f"{param} {row.id} holds chat rows: a dpo job needs preference pairs ({{\"input\": ..., "
                        '"preferred_output": [...], "non_preferred_output": [...]})', param=param)
    if method != "dpo" and is_pairs:
        raise UserError(f"{param} {row.id} holds preference pairs: train them with method {{\"type\": \"dpo\"}}",
                        param=param)


# --- running
class _Reporter:
    """The trainer's progress callback for a job: events, checkpoints, and a stop check at every event; and its
    `may_write` hook."""

    def __init__(self, ctx: JobContext, spec: FineTuneSpec):
        self.ctx, self.job, self.spec = ctx, ctx.job, spec
        self.config = spec.config(ctx.job.out_dir)
        self.name = spec.fine_tuned_model
        self.metrics: dict = {}
        self.hyperparameters: dict = {}
        self.last_event = 0.0

    def may_write(self) -> None:
        """Before a checkpoint or the model is written: the worker still holds the job (JobStopped if not), and
        the project is within its disk quota (RateLimited, which fails the job, if not)."""
        self.ctx.check()
        try:
            with self.ctx.db.session() as s:
                quotas.check_disk(s, self.job.project_id)
        except OperationalError as exc:  # the store is busy: the lease, not a passing lock, decides what happens
            log.warning("%s: disk quota not checked (%s)", self.job.id, str(exc).splitlines()[0])
        self.ctx.check()

    def __call__(self, ev: Event) -> None:
        self.ctx.check()
        if ev.kind == "start":
            self._resolved(ev.metrics)
            what = f"Resuming from checkpoint at step {ev.step}: " if ev.step else "Fine-tuning started: "
            self.ctx.event(what + ev.message, data={"step": ev.step, "total_steps": ev.total,
                                                    "hyperparameters": self.hyperparameters})
        elif ev.kind == "progress":
            self.metrics = ev.metrics
            self._metrics_event(ev)
        elif ev.kind == "checkpoint":
            with self.ctx.db.session() as s:
                models.add_checkpoint(s, job_id=self.job.id, step=ev.step, path=ev.message, metrics=self.metrics,
                                      model_name=f"{self.name}:ckpt-step-{ev.step}")
                jobs.set_result(s, self.job.id, self.ctx.worker_id, trained_tokens=self.metrics.get("trained_tokens"))
            self.ctx.event(f"Checkpoint created at step {ev.step}", data={"step": ev.step})
        elif ev.kind == "message" and ev.message:
            self.ctx.event(ev.message)

    def _resolved(self, plan: dict) -> None:
        """The run's n_epochs, batch_size and learning_rate_multiplier as the trainer planned them, on the job (and
        DPO's beta and sft_weight)."""
        if "epochs" not in plan:
            return
        self.hyperparameters = {
            "n_epochs": plan["epochs"], "batch_size": plan["batch_size"],
            "learning_rate_multiplier": round(plan["learning_rate"] / self.config.default_lr(), 6),
        }
        if self.config.method == "dpo":
            self.hyperparameters.update(beta=self.config.beta, sft_weight=self.config.sft_weight)
        with self.ctx.db.session() as s:
            jobs.set_result(s, self.job.id, self.ctx.worker_id, hyperparameters=self.hyperparameters)

    def _metrics_event(self, ev: Event) -> None:
        now = time.monotonic()
        if now - self.last_event < METRIC_EVENT_EVERY_S and ev.step != ev.total and "valid_loss" not in ev.metrics:
            return  # (a step with a validation loss is always written: the validation curve keeps every point)
        self.last_event = now
        m = ev.metrics
        msg = f"Step {ev.step}/{ev.total}: training loss={m.get('train_loss', 0):.4f}"
        if "preference_accuracy" in m:
            msg += f", reward margin={m['reward_margin']:.4f}, preference accuracy={m['preference_accuracy']:.2f}"
        if "valid_loss" in m:
            msg += f", validation loss={m['valid_loss']:.4f}"
        self.ctx.event(msg, type="metrics", data={**m, "total_steps": ev.total})
