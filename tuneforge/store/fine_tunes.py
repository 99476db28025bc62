"""Accepting a fine-tuning job: check its files, model and hyperparameters, name its model, queue it."""

from __future__ import annotations

import random
import re
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound, UserError
from tuneforge.models import registry
from tuneforge.store import datasets, files, jobs
from tuneforge.store.tables import FineTunedModel, Job, Project
from tuneforge.training.config import TrainConfig

# TrainConfig fields a job may set through `hyperparameters` (tuneforge's extension of OpenAI's three)
TRAIN_EXTENSIONS = (
    "method", "lora_rank", "lora_alpha", "lora_dropout", "max_length", "packing", "pack_tokens", "warmup_ratio",
    "weight_decay", "max_grad_norm", "checkpoint_every", "eval_every", "keep_checkpoints", "skip_invalid",
)


def train_config(hyper: dict, seed: int) -> dict:
    """OpenAI hyperparameters (+ extensions) as TrainConfig fields; UserError naming the bad field."""
    hyper = dict(hyper)
    cfg: dict = {"seed": seed}
    if (epochs := hyper.pop("n_epochs", "auto")) != "auto":
        cfg["epochs"] = epochs
    if (batch := hyper.pop("batch_size", "auto")) != "auto":
        cfg["batch_size"] = batch
    multiplier = hyper.pop("learning_rate_multiplier", "auto")
    for key, value in hyper.items():
        if key not in TRAIN_EXTENSIONS:
            raise UserError(f"Unknown hyperparameter '{key}': use batch_size, learning_rate_multiplier, n_epochs "
                            f"or one of {', '.join(TRAIN_EXTENSIONS)}", param=f"hyperparameters.{key}")
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


def model_name(base: str, project: Project, suffix: str | None, job_id: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", project.name.lower()).strip("-") or "project"
    return f"ft:{base}:{slug}:{suffix or ''}:{job_id.removeprefix('ftjob-')[:12]}"


def base_of(s: Session, model: str, project_id: str) -> tuple[str, str]:
    """(name shown as the job's model, what the trainer loads): a registry model, or a fine-tune to continue."""
    if model in registry.BUNDLED:
        return model, model
    row = s.get(FineTunedModel, model)
    if row is not None and row.project_id == project_id and not row.deleted:
        return model, row.path
    raise NotFound(f"The model `{model}` does not exist or you do not have access to it: fine-tune one of "
                   f"{', '.join(registry.BUNDLED)} or one of your fine-tuned models", param="model",
                   code="model_not_found")


def create(s: Session, project: Project, req) -> Job:
    """Create and queue a job from a FineTuningJobCreate request."""
    shown, loadable = base_of(s, req.model, project.id)
    rules: list[str] = []
    train_file = _training_file(s, project, req.training_file, "training_file", "train", rules)
    valid_file = (_training_file(s, project, req.validation_file, "validation_file", "test", rules)
                  if req.validation_file else None)
    hyper = req.hyperparameters
    if req.method is not None and req.method.supervised is not None:
        hyper = req.method.supervised.hyperparameters
    hyper_dict = hyper.model_dump() if hyper is not None else {}
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    cfg = train_config(hyper_dict, seed)
    job = jobs.create(s, project_id=project.id, kind="fine_tune", spec={})
    job.spec = {
        "model": shown, "base_model": loadable, "training_file": train_file.id, "training_path": train_file.path,
        "validation_file": valid_file.id if valid_file else None,
        "validation_path": valid_file.path if valid_file else None, "suffix": req.suffix, "seed": seed,
        "metadata": req.metadata, "integrations": req.integrations, "hyperparameters": hyper_dict,
        "train_config": cfg, "pruning_rules": rules,
        "fine_tuned_model": model_name(shown.split(":")[1] if shown.startswith("ft:") else shown,
                                                            project, req.suffix, job.id),
    }
    jobs.enqueue(s, job.id)
    s.flush()
    s.refresh(job)
    return job


def _training_file(s: Session, project: Project, file_id: str, param: str, split: str, rules: list[str]):
    """An uploaded file, or a dataset's split written out as one (its pruning rules applied, and noted in
    `rules` for the model to apply when served)."""
    if file_id.startswith("ds-"):
        ds = datasets.get(s, file_id, project.id)
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
