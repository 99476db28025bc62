"""POST /v1/chat/completions: base and fine-tuned models, streamed or not, JSON-constrained on request."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuneforge.data.prune import prune
from tuneforge.data.render import encode_prompt
from tuneforge.inference.engine import Delta, Engine, Params
from tuneforge.server import generation
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    TokenLogprobContent,
    TopLogprob,
    Usage,
)
from tuneforge.store.db import new_id

router = APIRouter(tags=["chat"])


def _params(body: ChatCompletionRequest, max_tokens: int, i: int) -> Params:
    seed = body.seed + i if body.seed is not None else None  # n choices with one seed must still differ
    return Params(
        max_tokens=max_tokens, temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, seed=seed, stop=body.stops(), logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
    )


def _constraint(engine: Engine, body: ChatCompletionRequest):
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    return engine.json_constraint(fmt.json_schema.schema_ if fmt.type == "json_schema" else None)


def _logprobs(engine: Engine, delta: Delta) -> list[TokenLogprobContent]:
    def text(token_id: int) -> str:
        return engine.tokenizer.decode([token_id])

    return [
        TokenLogprobContent(
            token=text(lp.token_id), logprob=lp.logprob, bytes=list(text(lp.token_id).encode()),
            top_logprobs=[TopLogprob(token=text(t), logprob=v, bytes=list(text(t).encode())) for t, v in lp.top],
        )
        for lp in delta.logprobs
    ]


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(state: StateDep, project: ProjectDep, body: ChatCompletionRequest, http: Request):
    generation.check_penalties(body.frequency_penalty, body.presence_penalty)
    loaded = await generation.load(state, body.model, project.id)
    engine = loaded.engine
    messages = prune([m.model_dump(exclude_none=True) for m in body.messages], list(loaded.target.pruning_rules))
    prompt = encode_prompt(engine.tokenizer, messages, body.tools)
    requested = body.max_completion_tokens or body.max_tokens
    max_tokens = generation.token_budget(engine, len(prompt), requested, state.settings.default_max_tokens)
    params = [_params(body, max_tokens, i) for i in range(body.n)]
    constraints = [_constraint(engine, body) for _ in range(body.n)]
    stream = generation.run(engine, [prompt] * body.n, params, loaded.target.adapter, constraints, http)
    if body.stream:
        return StreamingResponse(_sse(engine, body, stream), media_type="text/event-stream")
    return await _complete(engine, body, stream, len(prompt))


async def _complete(engine: Engine, body: ChatCompletionRequest, stream, prompt_tokens: int) -> ChatCompletion:
    texts = [""] * body.n
    logprobs: list[list] = [[] for _ in range(body.n)]
    reasons: list[str] = ["stop"] * body.n
    completion = 0
    async for i, delta in stream:
        texts[i] += delta.text
        logprobs[i] += _logprobs(engine, delta) if body.logprobs else []
        if delta.finish_reason:
            reasons[i] = delta.finish_reason
            completion += delta.completion_tokens
    choices = [
        ChatChoice(index=i, message=AssistantMessage(content=texts[i]), finish_reason=reasons[i],
                   logprobs=ChoiceLogprobs(content=logprobs[i]) if body.logprobs else None)
        for i in range(body.n)
    ]
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)
    return ChatCompletion(model=body.model, choices=choices, usage=usage)


async def _sse(engine: Engine, body: ChatCompletionRequest, stream):
    """Server-sent events as OpenAI sends them: a role delta first, content deltas, a finish_reason chunk,
    an optional usage chunk, then `data: [DONE]`."""
    chunk_id, created = new_id("chatcmpl-"), int(time.time())
    with_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        c = ChatCompletionChunk(id=chunk_id, created=created, model=body.model, choices=choices, usage=usage)
        return f"data: {c.model_dump_json()}\n\n"

    for i in range(body.n):
        yield chunk([ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))])
    prompt_tokens = completion = 0
    try:
        async for i, delta in stream:
            lp = ChoiceLogprobs(content=_logprobs(engine, delta)) if body.logprobs and delta.logprobs else None
            if delta.text or lp:
                yield chunk([ChunkChoice(index=i, delta=ChunkDelta(content=delta.text), logprobs=lp)])
            if delta.finish_reason:
                prompt_tokens = delta.prompt_tokens
                completion += delta.completion_tokens
                yield chunk([ChunkChoice(index=i, delta=ChunkDelta(), finish_reason=delta.finish_reason)])
    except Exception as exc:  # the status line is gone: report in the stream, as OpenAI does
        error = {"message": str(exc), "type": "server_error", "param": None, "code": None}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    if with_usage:
        total = prompt_tokens + completion
        yield chunk([], Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=total))
    yield "data: [DONE]\n\n"
