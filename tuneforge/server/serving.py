"""From a model name in a request to an engine and an adapter: one engine per base model, shared by all
the fine-tunes on it.

Names: a registry name (`smollm2-135m-instruct`, visible to every project), a project's fine-tuned model
(`ft:{base}:{project}:{suffix}:{job}`) or one of its checkpoints (`...:ckpt-step-N`). A fine-tune trained
with LoRA is an adapter on its base's engine; a full fine-tune gets an engine of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from tuneforge.errors import NotFound
from tuneforge.inference.engine import Engine
from tuneforge.models import registry
from tuneforge.store.db import Database
from tuneforge.store.tables import Checkpoint, FineTunedModel, Job


@dataclass(frozen=True)
class Target:
    base: str  # the engine's model folder
    adapter: Path | None
    pruning_rules: tuple[str, ...] = ()  # texts cut from requests, as from the model's training data


def model_not_found(name: str) -> NotFound:
    return NotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


def resolve(db: Database, name: str, project_id: str) -> Target:
    """Where a model name's weights are; NotFound (404) for unknown names and other projects' models."""
    if name in registry.BUNDLED:
        return Target(str(registry.materialize(name)), None)
    with db.session() as s:
        found = _fine_tuned(s, name, project_id)
    if found is None:
        raise model_not_found(name)
    path, rules = found
    if (path / "adapter_config.json").exists():
        return Target(registry.resolve(str(path)).base, path, rules)
    return Target(str(path), None, rules)


def _fine_tuned(s, name: str, project_id: str) -> tuple[Path, tuple[str, ...]] | None:
    row = s.get(FineTunedModel, name)
    if row is not None:
        ok = row.project_id == project_id and not row.deleted
        return (Path(row.path), tuple(row.pruning_rules or ())) if ok else None
    ckpt = s.scalar(select(Checkpoint).where(Checkpoint.model_name == name))
    if ckpt is None:
        return None
    job = s.get(Job, ckpt.job_id)
    deleted = s.scalar(select(FineTunedModel.deleted).where(FineTunedModel.job_id == job.id))
    if job.project_id != project_id or deleted or not Path(ckpt.path).exists():
        return None
    return Path(ckpt.path), tuple(job.spec.get("pruning_rules") or ())


class Engines:
    """One engine per base folder, created on first use: ours (`transformers`, the CPU path and default) or
    vLLM's (`vllm`, CUDA machines)."""

    def __init__(self, max_batch: int = 32, max_adapters: int = 8, backend: str = "transformers"):
        self.max_batch, self.max_adapters, self.backend = max_batch, max_adapters, backend
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, base: str) -> Engine:
        with self._lock:
            if base not in self._engines:
                if self.backend == "vllm":
                    from tuneforge.inference.vllm_engine import VllmEngine

                    engine = VllmEngine(base, max_batch=self.max_batch, max_adapters=self.max_adapters)
                else:
                    engine = Engine(base, max_batch=self.max_batch, max_adapters=self.max_adapters)
                self._engines[base] = engine
            return self._engines[base]

    def load(self) -> dict[str, int]:
        """Requests in flight (running, waiting or queued) per loaded base model."""
        return {Path(base).name: engine.busy for base, engine in list(self._engines.items())}

    def unload(self, adapter: Path) -> None:
        for engine in list(self._engines.values()):
            engine.unload(adapter)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
