"""Engines: one per model folder (a base and the LoRA fine-tunes on it, or one full model), a bounded number.

Which folder a model name means is `store/models.py`'s answer (`models.resolve`); a fine-tune trained with
LoRA is an adapter on its base's engine, a full fine-tune, a merge or a full checkpoint gets an engine of
its own. Each engine holds a whole model in memory, so at most `max_engines` are loaded: the least recently
used idle one is closed to make room, and when every loaded engine is busy a new model is refused with 429
rather than loaded past the limit. Loading (seconds to minutes) happens outside the lock that guards the
table, so requests for models already loaded never wait behind it.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from pathlib import Path

from tuneforge import limits
from tuneforge.errors import RateLimited
from tuneforge.inference.engine import Engine


class Engines:
    """One engine per folder, created on first use: ours (`transformers`, the CPU path and default) or vLLM's
    (`vllm`, CUDA machines)."""

    def __init__(self, max_batch: int = 32, max_adapters: int = 8, backend: str = "transformers",
                 max_engines: int | None = None, max_queue: int | None = None, quantize: str | None = None):
        self.max_batch, self.max_adapters, self.backend, self.quantize = max_batch, max_adapters, backend, quantize
        self.max_engines = limits.current().max_engines if max_engines is None else max_engines
        self.max_queue = limits.current().engine_queue if max_queue is None else max_queue
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # least recently used first
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, base: str, hold: bool = False) -> Engine:
        """The engine for a folder, loaded if need be; `hold`: counted as in use (never closed to make room)
        until `release`, from now rather than from its first submitted request."""
        with self._lock:
            if base in self._engines:
                self._engines.move_to_end(base)
                return self._held(self._engines[base], hold)
            loading = self._loading.setdefault(base, threading.Lock())
        with loading:  # one load per folder; other folders load (or serve) meanwhile
            with self._lock:
                if base in self._engines:
                    return self._held(self._engines[base], hold)
                closing = self._make_room()
            for old in closing:  # outside the lock: a close waits for the engine's thread
                old.close()
            if closing:
                gc.collect()
            engine = self._new(base)
            with self._lock:
                self._engines[base] = engine
                self._loading.pop(base, None)
                return self._held(engine, hold)

    @staticmethod
    def _held(engine: Engine, hold: bool) -> Engine:
        if hold:
            engine.held += 1
        return engine

    def release(self, engine: Engine) -> None:
        """A request that held the engine (`get(..., hold=True)`) is over."""
        with self._lock:
            engine.held -= 1

    def _make_room(self) -> list[Engine]:
        """Take idle engines out of the table, least recently used first, until one more fits (under the table
        lock; the new one is among those loading); the caller closes them."""
        out = []
        while len(self._engines) + self._loading_count() > self.max_engines:
            idle = next((name for name, e in self._engines.items() if e.busy == 0 and not e.held), None)
            if idle is None:
                raise RateLimited(f"The server is serving {len(self._engines)} models, all busy: it loads at most "
                                  f"{self.max_engines} at once. Retry shortly.", code="server_overloaded")
            out.append(self._engines.pop(idle))
        return out

    def _loading_count(self) -> int:
        return sum(1 for name, lock in self._loading.items() if lock.locked() and name not in self._engines)

    def _new(self, base: str) -> Engine:
        if self.backend == "vllm":
            from tuneforge.inference.vllm_engine import VllmEngine

            return VllmEngine(base, max_batch=self.max_batch, max_adapters=self.max_adapters)
        return Engine(base, max_batch=self.max_batch, max_adapters=self.max_adapters, max_queue=self.max_queue,
                      quantize=self.quantize)

    def load(self) -> dict[str, int]:
        """Requests in flight (running, waiting or queued) per loaded model."""
        return {Path(base).name: engine.busy for base, engine in list(self._engines.items())}

    def unload(self, adapter: Path) -> None:
        for engine in list(self._engines.values()):
            engine.unload(adapter)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
