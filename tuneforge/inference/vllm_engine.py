"""The vLLM serving backend (`tuneforge serve --backend vllm`, CUDA machines): the same interface as
`engine.Engine`, on vLLM's async engine with its multi-LoRA support and structured outputs.

vLLM does on the GPU what `engine.py` does on CPU (continuous batching, mixed adapters, paged KV cache,
prefix caching, constrained decoding), faster; this module only translates. vLLM runs its engine on an
asyncio loop of its own, here in a background thread; outputs go to each request's `on_output` callback
from that thread, as with `Engine`.

Written against vLLM 0.33 (`vllm.v1.engine.async_llm.AsyncLLM`, `SamplingParams(output_kind=DELTA,
structured_outputs=...)`, `LoRARequest(name, int_id, path)`). It has not been run in this project's CI,
which has no GPU: see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.inference.engine import Delta, Handle, Request
from tuneforge.inference.sampling import TokenLogprob

FINISH = {"stop": "stop", "length": "length", "abort": "cancelled", "repetition": "stop"}


def available() -> None:
    """Raise ConfigError with what to do when vLLM cannot be used here."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ConfigError("--backend vllm needs vLLM on a CUDA machine: pip install 'tuneforge[vllm]'") from None
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--backend vllm needs a CUDA GPU; on this machine use the default transformers backend")


class JsonSpec:
    """A response_format constraint, handed to vLLM's structured outputs (None: any JSON object)."""

    def __init__(self, schema: dict | None):
        self.schema = schema


class _VllmHandle(Handle):
    def __init__(self, request: Request, engine: VllmEngine, request_id: str):
        super().__init__(request)
        self._engine, self._id = engine, request_id

    def cancel(self) -> None:
        super().cancel()
        asyncio.run_coroutine_threadsafe(self._engine.llm.abort(self._id), self._engine.loop)


class VllmEngine:
    def __init__(self, base: str, max_batch: int = 256, max_adapters: int = 8, max_lora_rank: int = 64,
                 gpu_memory_utilization: float = 0.85):
        available()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="tuneforge-vllm", daemon=True).start()
        args = AsyncEngineArgs(
            model=base, dtype="auto", enable_lora=True, max_loras=max_adapters, max_cpu_loras=2 * max_adapters,
            max_lora_rank=max_lora_rank, max_num_seqs=max_batch, enable_prefix_caching=True,
            gpu_memory_utilization=gpu_memory_utilization, max_logprobs=20,
        )

        async def make():
            return AsyncLLM.from_engine_args(args)  # built on the loop that will drive it

        self.llm = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        self.tokenizer = self.llm.get_tokenizer()
        self.context = self.llm.model_config.max_model_len
        self.vocab_size = self.llm.model_config.get_vocab_size()
        self._lora_ids: dict[str, int] = {}
        self._active = 0
        self.held = 0  # requests being prepared for this engine (the server's `Engines` counts them)

    @property
    def busy(self) -> int:
        return self._active

    def json_constraint(self, schema: dict | None) -> JsonSpec:
        return JsonSpec(schema)

    def submit(self, request: Request) -> Handle:
        request_id = uuid.uuid4().hex
        asyncio.run_coroutine_threadsafe(self._generate(request_id, request), self.loop)
        return _VllmHandle(request, self, request_id)

    def score(self, token_ids: list[int], adapter: Path | None = None, top: int = 0) -> Future:
        return asyncio.run_coroutine_threadsafe(self._score(token_ids, adapter, top), self.loop)

    def unload(self, path: Path) -> None:
        lora_id = self._lora_ids.get(str(path))
        if lora_id is not None:
            asyncio.run_coroutine_threadsafe(self.llm.remove_lora(lora_id), self.loop)

    def close(self) -> None:
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)

    # --- on the vLLM loop
    async def _lora(self, adapter: Path | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(adapter)
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        lora = LoRARequest(key, lora_id, key)
        await self.llm.add_lora(lora)  # load errors (rank over max_lora_rank...) surface here, not mid-batch
        return lora

    def _sampling(self, request: Request, **overrides):
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        p = request.params
        structured = None
        if isinstance(request.constraint, JsonSpec):
            schema = request.constraint.schema
            structured = StructuredOutputsParams(json=schema) if schema is not None else \
                StructuredOutputsParams(json_object=True)
        kwargs = dict(
            max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, seed=p.seed, stop=p.stop or None,
            logprobs=p.top_logprobs if p.logprobs else None, output_kind=RequestOutputKind.DELTA,
            structured_outputs=structured,
        )
        return SamplingParams(**(kwargs | overrides))

    async def _generate(self, request_id: str, request: Request) -> None:
        from vllm.inputs import tokens_input

        self._active += 1
        completion = 0
        try:
            lora = await self._lora(request.adapter)
            stream = self.llm.generate(tokens_input(request.prompt_ids), self._sampling(request), request_id,
                                       lora_request=lora)
            async for out in stream:
                c = out.outputs[0]
                ids = list(c.token_ids)
                completion += len(ids)
                logprobs = [_logprob(d, t, request.params.top_logprobs) for d, t in zip(c.logprobs or [], ids)]
                reason = FINISH.get(c.finish_reason, "error") if out.finished else None
                request.on_output(Delta(
                    text=c.text, token_ids=ids, logprobs=logprobs if request.params.logprobs else [],
                    finish_reason=reason, prompt_tokens=len(request.prompt_ids), completion_tokens=completion,
                    error="vLLM reported an error" if reason == "error" else None,
                ))
        except Exception as exc:
            request.on_output(Delta(finish_reason="error", error=f"{type(exc).__name__}: {exc}"))
        finally:
            self._active -= 1

    async def _score(self, token_ids: list[int], adapter: Path | None, top: int) -> list[TokenLogprob | None]:
        from vllm.inputs import tokens_input
        from vllm.sampling_params import SamplingParams

        lora = await self._lora(adapter)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=max(top, 1))
        final = None
        async for out in self.llm.generate(tokens_input(token_ids), params, uuid.uuid4().hex, lora_request=lora):
            final = out
        entries = final.prompt_logprobs or [None] * len(token_ids)
        return [None] + [_logprob(d, t, top) for d, t in zip(entries[1:], token_ids[1:])]


def _logprob(entry: dict, token_id: int, top: int) -> TokenLogprob:
    """vLLM's {token id: Logprob(logprob, rank, decoded_token)} at one position as our TokenLogprob."""
    ranked = sorted(((t, lp.logprob) for t, lp in entry.items() if lp.rank is not None and lp.rank <= top),
                    key=lambda x: -x[1])
    return TokenLogprob(token_id, entry[token_id].logprob, ranked[:top])
