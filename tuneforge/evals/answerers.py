"""Answer functions for eval candidates: how a model in a run answers a batch of prompts.

`runner.Candidate(answer=...)` takes any `answer(prompts, sampling) -> answers`; these build the two kinds
the platform has:

- `client_answerer`: a model behind an OpenAI-compatible endpoint (an upstream such as `gpt-4o` through the
  configured upstreams, or a model this platform serves at its own /v1), prompts sent concurrently. A prompt
  the endpoint refuses (HTTP 400/413/422: too long, filtered) becomes an answer with `error` set, scored as
  wrong, instead of stopping the run forever; any other failure (bad key, endpoint down after the retries)
  stops the run, which resumes later from its cache.
- `generator_answerer`: a model loaded in this process (`tuneforge.inference.generate.Generator`: a registry
  base, an adapter, a checkpoint folder), prompts batched continuously by its engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.evals.chat import ChatError, OpenAIChatClient
from tuneforge.evals.judging import REFUSED, run_calls
from tuneforge.evals.outputs import Output
from tuneforge.evals.runner import AnswerFn, Sampling
from tuneforge.inference import tool_calls


def client_answerer(client: OpenAIChatClient, *, concurrency: int = 8) -> AnswerFn:
    """Answers from an OpenAI-compatible endpoint, `concurrency` requests in flight."""

    def one(prompt: dict, sampling: Sampling) -> Output:
        try:
            message = client.respond(prompt["messages"], tools=prompt.get("tools"), max_tokens=sampling.max_tokens,
                                     temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed)
        except ChatError as exc:
            if exc.status in REFUSED:
                return Output(error=str(exc))
            raise
        return Output.of(message)

    def answer(prompts: list[dict], sampling: Sampling) -> Sequence[Any]:
        return run_calls(prompts, lambda p: one(p, sampling), concurrency=concurrency)

    return answer


def generator_answerer(generator: Any, *, batch_size: int | None = None) -> AnswerFn:
    """Answers from a model loaded in this process (a `Generator`): at most `batch_size` generating at once
    (default: its engine's batch)."""

    def answer(prompts: list[dict], sampling: Sampling) -> Sequence[Any]:
        from tuneforge.inference.generate import Prompt, SamplingParams

        params = SamplingParams(max_new_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                top_p=sampling.top_p, seed=sampling.seed)
        texts = generator.complete([Prompt(p["messages"], p.get("tools")) for p in prompts], params, batch_size)
        return [Output.of(tool_calls.message(text, p.get("tools"))) for text, p in zip(texts, prompts)]

    return answer
