"""Engines: one per base model, shared by all the fine-tunes on it.

Which folder a model name means is `store/models.py`'s answer (`models.resolve`); a fine-tune trained with
LoRA is an adapter on its base's engine, a full fine-tune gets an engine of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tuneforge.inference.engine import Engine


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
