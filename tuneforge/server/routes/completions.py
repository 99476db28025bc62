"""POST /v1/completions: raw-text prompts, with `echo` and `logprobs` for log-likelihood evaluation.

lm-evaluation-harness's `local-completions` scores a continuation by sending context + continuation with
`echo: true, logprobs: 1, max_tokens: 1` and summing `token_logprobs` over the continuation: so the echoed
prompt's log-probabilities come first (None for the first token), then the generated token's.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import UserError
from tuneforge.inference.engine import Engine, Params
from tuneforge.inference.sampling import TokenLogprob
from tuneforge.server import generation
from tuneforge.server.deps import GenerationSlot, ProjectDep, StateDep
from tuneforge.server.protocol import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, Usage
from tuneforge.store.db import new_id

router = APIRouter(tags=["completions"])


def _prompts(engine: Engine, prompt) -> list[list[int]]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    out = []
    for p in prompt:
        ids = engine.tokenizer(p, add_special_tokens=False).input_ids if isinstance(p, str) else list(p)
        if not ids:
            raise UserError("prompt is empty: give at least one token", param="prompt")
        if max(ids) >= engine.vocab_size or min(ids) < 0:
            raise UserError("prompt has token ids outside the model's vocabulary", param="prompt")
        out.append(ids)
    return out


def _logprobs_object(engine: Engine, items: list[TokenLogprob | None], ids: list[int]) -> CompletionLogprobs:
    tokens = [engine.tokenizer.decode([t]) for t in ids]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return CompletionLogprobs(
        tokens=tokens, text_offset=offsets, token_logprobs=[None if x is None else x.logprob for x in items],
        top_logprobs=[None if x is None else {engine.tokenizer.decode([t]): v for t, v in x.top} for x in items],
    )


@router.post("/v1/completions", response_model=Completion)
async def completions(state: StateDep, project: ProjectDep, body: CompletionRequest, http: Request,
                      slot: GenerationSlot):
    generation.check_penalties(body.frequency_penalty, body.presence_penalty)
    limits = state.settings.limits
    generation.check_sequences(limits, _count(body.prompt) * body.n, "n")
    slot.hold(_count(body.prompt) * body.n)
    loaded = await generation.load(state, body.model, project.id, slot)
    engine, adapter = loaded.engine, loaded.target.adapter
    bias = body.bias(engine.vocab_size)
    prompts = await generation.prepare(limits, _prompts, engine, body.prompt)
    for p in prompts:  # on every path: max_tokens 0 with echo scores the prompt, and that must fit too
        generation.check_context(engine, len(p), param="prompt")
    budgets = [generation.token_budget(engine, len(p), body.max_tokens, state.settings.default_max_tokens)
               if body.max_tokens != 0 else 0 for p in prompts]
    want = body.logprobs is not None
    jobs = [(pi, k) for pi in range(len(prompts)) for k in range(body.n)]
    params = [
        Params(max_tokens=budgets[pi], temperature=1.0 if body.temperature is None else body.temperature,
               top_p=1.0 if body.top_p is None else body.top_p, seed=None if body.seed is None else body.seed + k,
               stop=body.stops(), logprobs=want, top_logprobs=body.logprobs or 0, logit_bias=bias)
        for pi, k in jobs
    ]
    if body.stream:
        stream = generation.run(engine, [prompts[pi] for pi, _ in jobs], params, adapter, [None] * len(jobs), http)
        return StreamingResponse(_sse(body, stream, prompt_tokens=sum(len(prompts[pi]) for pi, _ in jobs)),
                                 media_type="text/event-stream")
    echoed = []
    if body.echo and want:
        futures = [engine.score(p, adapter, top=body.logprobs or 0) for p in prompts]
        echoed = [await run_in_threadpool(f.result) for f in futures]
    texts = [""] * len(jobs)
    lps: list[list] = [[] for _ in jobs]
    ids: list[list[int]] = [[] for _ in jobs]
    reasons = ["length"] * len(jobs)
    todo = [j for j, (pi, _) in enumerate(jobs) if budgets[pi] > 0]
    if todo:
        stream = generation.run(engine, [prompts[jobs[j][0]] for j in todo], [params[j] for j in todo], adapter,
                                [None] * len(todo), http)
        async for i, delta in stream:
            j = todo[i]
            texts[j] += delta.text
            lps[j] += delta.logprobs
            ids[j] += delta.token_ids
            if delta.finish_reason:
                reasons[j] = delta.finish_reason
    choices = []
    for j, (pi, _) in enumerate(jobs):
        text, items, lp_ids = texts[j], lps[j], [x.token_id for x in lps[j]]
        if body.echo:
            text = engine.tokenizer.decode(prompts[pi]) + text
            items, lp_ids = echoed[pi] + items if echoed else items, prompts[pi] + lp_ids if echoed else lp_ids
        logprobs = _logprobs_object(engine, items, lp_ids) if want else None
        choices.append(CompletionChoice(text=text, index=j, logprobs=logprobs, finish_reason=reasons[j]))
    prompt_tokens = sum(len(prompts[pi]) for pi, _ in jobs)
    completion = sum(len(x) for x in ids)
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)
    return Completion(model=body.model, choices=choices, usage=usage)


async def _sse(body: CompletionRequest, stream, prompt_tokens: int):
    """Text chunks, then (with `stream_options.include_usage`) a chunk with no choices and the usage, as OpenAI
    sends them; an error after the status line is reported in the stream."""
    cid, created = new_id("cmpl-"), int(time.time())
    completion = 0
    try:
        async for i, delta in stream:
            if delta.text or delta.finish_reason:
                c = Completion(id=cid, created=created, model=body.model, choices=[
                    CompletionChoice(text=delta.text, index=i, finish_reason=delta.finish_reason)])
                yield f"data: {c.model_dump_json(exclude={'usage'})}\n\n"
            if delta.finish_reason:
                completion += delta.completion_tokens
    except Exception as exc:
        error = {"message": str(exc), "type": "server_error", "param": None, "code": None}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    if body.stream_options and body.stream_options.include_usage:
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                      total_tokens=prompt_tokens + completion)
        last = Completion(id=cid, created=created, model=body.model, choices=[], usage=usage)
        yield f"data: {last.model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


def _count(prompt) -> int:
    """How many prompts a request's `prompt` holds (before tokenizing: a bound checked first)."""
    if isinstance(prompt, str) or all(isinstance(p, int) for p in prompt):
        return 1
    return len(prompt)
