"""Generation for a base model with an optional adapter: what `chat`, `generate` and evals use.

It runs on the serving `Engine` (continuous batching), not on transformers' `generate`: `generate` runs a
fixed batch until its longest answer ends, so one rambling row kept every row of its batch computing (a base
model that never stopped took 25 minutes for 100 rows). Through the engine each row leaves the batch when it
ends and the next prompt takes its place, so a row costs its own tokens; evals, `tuneforge generate` and the
server share one decoding path (the same stop tokens, the same greedy choice).

Prompts are rendered by `tuneforge.data.render.encode_prompt`, the same renderer training uses. Decoding is
greedy unless a temperature is given; generation stops at every end-of-turn token the model knows. An
adapter is applied per request, unmerged (the engine's `MultiLoRA`), as the server serves it.
"""

from __future__ import annotations

import queue
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.render import encode_prompt
from tuneforge.errors import TuneforgeError, UserError
from tuneforge.inference.engine import Delta, Engine, Handle, Params, Request
from tuneforge.models import registry
from tuneforge.progress import Callback, Event, ignore

FAILED = ("error", "cancelled")  # finish reasons that leave no answer


@dataclass
class Prompt:
    messages: list[dict]
    tools: list[dict] | None = None


@dataclass
class SamplingParams:
    max_new_tokens: int = 256  # callers pass their own budget: evals a margin over the longest reference
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # each prompt's sampling is repeatable whatever else is generated with it


class GenerationError(TuneforgeError):
    """The engine gave up on a prompt (its adapter did not load, the model ran out of memory, it was closed)."""

    def __init__(self, message: str):
        super().__init__(message, code="generation_failed")


def drop_final_answer(messages: list[dict]) -> list[dict]:
    """A conversation's prompt: everything before its final assistant turn, if it ends with one."""
    return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages


class Generator:
    """One model (and adapter) answering prompts through an engine of its own. `close()` (or a `with` block)
    frees the model at once; otherwise that happens when the Generator is garbage, or at exit. The engine's
    thread is a daemon: it never keeps a process alive."""

    def __init__(self, model: str, adapter: str | None = None, device: str | None = None, on_event: Callback = ignore,
                 max_batch: int = 32, quantize: str | None = None):
        ref = registry.resolve(model, lambda m: on_event(Event("message", m)))
        if adapter and ref.adapter:
            raise UserError(f"{model} is already an adapter: pass it as --model or as --adapter, not both")
        self.adapter: Path | None = ref.adapter
        if adapter:
            adapter_ref = registry.resolve(str(adapter))
            if adapter_ref.adapter is None:
                raise UserError(f"{adapter} is not an adapter folder (no adapter_config.json)")
            self.adapter = adapter_ref.adapter
        self.engine = Engine(ref.base, device=device, max_batch=max_batch, max_adapters=1, quantize=quantize)
        self.tokenizer = self.engine.tokenizer
        # Also run at exit: a daemon thread still alive when the interpreter ends sometimes aborts it (rc 134).
        self._close = weakref.finalize(self, self.engine.close)

    def close(self) -> None:
        """Stop the engine and free the model (idempotent)."""
        self._close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def complete(
        self, prompts: list[Prompt], params: SamplingParams | None = None, batch_size: int | None = None,
        on_event: Callback = ignore,
    ) -> list[str]:
        """The generated text of each prompt, in the order given. At most `batch_size` of them (default and
        at most: the engine's batch) generate at once; each finished one lets the next prompt in at once.
        Safe to call from several threads: their prompts share the engine's batch."""
        engine_params = _engine_params(params or SamplingParams())
        window = min(batch_size or self.engine.max_batch, self.engine.max_batch)
        texts: list[list[str]] = [[] for _ in prompts]
        finished: queue.Queue[tuple[int, Delta]] = queue.Queue()
        handles: list[Handle] = []
        on_event(Event("start", "generating", total=len(prompts)))
        try:
            for i in range(min(window, len(prompts))):
                handles.append(self._submit(prompts[i], engine_params, _collector(i, texts[i], finished)))
            for done in range(1, len(prompts) + 1):
                i, last = finished.get()
                if last.finish_reason in FAILED:
                    raise GenerationError(f"generation failed on prompt {i + 1} of {len(prompts)}: "
                                          f"{last.error or last.finish_reason}")
                if len(handles) < len(prompts):
                    n = len(handles)
                    handles.append(self._submit(prompts[n], engine_params, _collector(n, texts[n], finished)))
                on_event(Event("progress", step=done, total=len(prompts)))
        except BaseException:  # an error or Ctrl-C: stop what is still generating for nobody
            for handle in handles:
                handle.cancel()
            raise
        return ["".join(pieces) for pieces in texts]

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[str]:
        """Text pieces of one answer as they are generated (for the interactive chat)."""
        deltas: queue.Queue[Delta] = queue.Queue()
        handle = self._submit(prompt, _engine_params(params or SamplingParams()), deltas.put)
        try:
            while True:
                delta = deltas.get()
                if delta.finish_reason in FAILED:
                    raise GenerationError(f"generation failed: {delta.error or delta.finish_reason}")
                if delta.text:
                    yield delta.text
                if delta.finish_reason:
                    return
        finally:
            handle.cancel()  # a no-op once finished; stops the engine when the reader stopped early

    def _submit(self, prompt: Prompt, params: Params, on_output) -> Handle:
        if not self._close.alive:
            raise GenerationError("this Generator was closed: make a new one")
        ids = encode_prompt(self.tokenizer, prompt.messages, prompt.tools)
        return self.engine.submit(Request(ids, params, on_output, adapter=self.adapter))


def _engine_params(params: SamplingParams) -> Params:
    return Params(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                  seed=params.seed)


def _collector(index: int, pieces: list[str], finished: queue.Queue):
    """An `on_output` for one prompt of `complete` (called on the engine thread): its text, then its index
    and last delta on `finished`. It holds no Generator, so a dropped Generator can be collected."""

    def on_output(delta: Delta) -> None:
        pieces.append(delta.text)
        if delta.finish_reason:
            finished.put((index, delta))

    return on_output
