"""manifest.json: what made an adapter or model (base, data hash, hyperparameters, versions, metrics)."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("tuneforge", "torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _data(loaded) -> dict | None:
    if loaded is None:
        return None
    return {
        "path": loaded.report.path, "format": loaded.report.format, "sha256": loaded.sha256,
        "examples": len(loaded.examples),
        "skipped_invalid": loaded.skipped,
    }


def build_manifest(*, cfg, base_model, base_path, epochs, total_steps, train, valid, num_processes, step, metrics):
    hp = cfg.model_dump(mode="json", exclude={"model", "data", "validation", "out", "resume", "report_to"})
    hp.update(epochs=epochs, learning_rate=cfg.lr(), lora_alpha=cfg.alpha() if cfg.weights == "lora" else None)
    if cfg.method != "dpo":
        hp.pop("beta")
        hp.pop("sft_weight")
    return {
        "kind": "adapter" if cfg.weights == "lora" else "model",
        "base_model": base_model,
        "base_model_path": base_path,
        "method": cfg.method,
        "weights": cfg.weights,
        "step": step,
        "total_steps": total_steps,
        "num_processes": num_processes,
        "training_file": _data(train),
        "validation_file": _data(valid),
        "hyperparameters": hp,
        "metrics": metrics,
        "versions": library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
