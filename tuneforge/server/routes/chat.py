"""POST /v1/chat/completions: base and fine-tuned models, streamed or not, JSON-constrained on request.

Tools: the reply's `<tool_call>` blocks become `tool_calls` (streamed as OpenAI's deltas); a required or
named tool_choice opens the call in the prompt and constrains the rest to the call's JSON schema
(inference/tool_calls.py).
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuneforge.data.prune import prune
from tuneforge.data.render import encode_prompt
from tuneforge.errors import UserError
from tuneforge.inference.engine import Delta, Engine, Params
from tuneforge.inference.tool_calls import Text, ToolCall, ToolCallParser, ToolPlan
from tuneforge.server import generation
from tuneforge.server.deps import GenerationSlot, ProjectDep, StateDep
from tuneforge.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    FunctionDelta,
    MessageToolCall,
    TokenLogprobContent,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from tuneforge.store.db import new_id

router = APIRouter(tags=["chat"])


def _params(body: ChatCompletionRequest, max_tokens: int, i: int, bias: dict[int, float]) -> Params:
    seed = body.seed + i if body.seed is not None else None  # n choices with one seed must still differ
    return Params(
        max_tokens=max_tokens, temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, seed=seed, stop=body.stops() + body.tool_plan.stops(),
        logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0, logit_bias=bias,
    )


async def _constraints(limits, engine: Engine, body: ChatCompletionRequest) -> list:
    """One grammar constraint per choice (compiled off the event loop), or Nones."""
    if body.tool_plan.forced:
        return await _tool_constraints(limits, engine, body.tool_plan, body.n)
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return [None] * body.n
    schema = fmt.json_schema.schema_ if fmt.type == "json_schema" else None
    return await generation.json_constraint(limits, engine, schema, body.n)


async def _tool_constraints(limits, engine: Engine, plan: ToolPlan, n: int) -> list:
    """A required or named call: its JSON (after the `<tool_call>` that ends the prompt) follows the schema
    {"name": one of the tools, "arguments": that tool's parameters}."""
    try:
        return await generation.json_constraint(limits, engine, plan.schema(), n)
    except UserError as exc:
        raise UserError(f"tools: the parameters of the functions tool_choice allows are not a usable JSON schema "
                        f"({str(exc).split(': ', 1)[-1]}): fix them, or use tool_choice 'auto'", param="tools",
                        code="invalid_value") from None


def _encode(tokenizer, messages: list[dict], plan: ToolPlan) -> list[int]:
    """The prompt's tokens, with the tools it offers; a required call's opening tag after the generation
    prompt."""
    ids = encode_prompt(tokenizer, messages, plan.tools)
    return ids + tokenizer(plan.prefix, add_special_tokens=False)["input_ids"] if plan.prefix else ids


def _message(plan: ToolPlan, text: str, reason: str) -> tuple[AssistantMessage, str]:
    """The assistant message for a whole reply, and its finish_reason."""
    if not plan.names:
        return AssistantMessage(content=text), reason
    content, calls = plan.read(text)
    if not calls:
        return AssistantMessage(content=content or ""), reason
    message = AssistantMessage(content=content, tool_calls=[MessageToolCall(**c.to_openai()) for c in calls])
    return message, "tool_calls" if reason == "stop" else reason


def _stream_deltas(parser: ToolCallParser | None, text: str, finished: bool) -> list[ChunkDelta]:
    """A piece of a reply as chunk deltas: content, and each complete tool call as two deltas (its id and
    name, then its arguments)."""
    if parser is None:
        return [ChunkDelta(content=text)] if text else []
    sent = len(parser.calls)
    events: list[Text | ToolCall] = parser.feed(text) + (parser.finish() if finished else [])
    out = []
    for event in events:
        if isinstance(event, Text):
            out.append(ChunkDelta(content=event.text))
            continue
        index, sent = sent, sent + 1
        out.append(ChunkDelta(tool_calls=[ToolCallDelta(index=index, id=event.id, type="function",
                                                        function=FunctionDelta(name=event.name, arguments=""))]))
        out.append(ChunkDelta(tool_calls=[ToolCallDelta(index=index, function=FunctionDelta(
            arguments=event.arguments))]))
    return out


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
async def chat_completions(state: StateDep, project: ProjectDep, body: ChatCompletionRequest, http: Request,
                           slot: GenerationSlot):
    generation.check_penalties(body.frequency_penalty, body.presence_penalty)
    limits = state.settings.limits
    generation.check_sequences(limits, body.n, "n")
    slot.hold(body.n)
    loaded = await generation.load(state, body.model, project.id, slot)
    engine = loaded.engine
    bias = body.bias(engine.vocab_size)
    messages = prune([m.model_dump(exclude_none=True) for m in body.messages], list(loaded.target.pruning_rules))
    prompt = await generation.prepare(limits, _encode, engine.tokenizer, messages, body.tool_plan)
    requested = body.max_completion_tokens or body.max_tokens
    max_tokens = generation.token_budget(engine, len(prompt), requested, state.settings.default_max_tokens)
    params = [_params(body, max_tokens, i, bias) for i in range(body.n)]
    constraints = await _constraints(limits, engine, body)
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
    choices = []
    for i in range(body.n):
        message, reason = _message(body.tool_plan, texts[i], reasons[i])
        choices.append(ChatChoice(index=i, message=message, finish_reason=reason,
                                  logprobs=ChoiceLogprobs(content=logprobs[i]) if body.logprobs else None))
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)
    return ChatCompletion(model=body.model, choices=choices, usage=usage)


async def _sse(engine: Engine, body: ChatCompletionRequest, stream):
    """Server-sent events as OpenAI sends them: a role delta first, content and tool-call deltas, a
    finish_reason chunk, an optional usage chunk, then `data: [DONE]`."""
    chunk_id, created = new_id("chatcmpl-"), int(time.time())
    with_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        c = ChatCompletionChunk(id=chunk_id, created=created, model=body.model, choices=choices, usage=usage)
        return f"data: {c.model_dump_json()}\n\n"

    for i in range(body.n):
        yield chunk([ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))])
    prompt_tokens = completion = 0
    plan = body.tool_plan
    parsers = [plan.parser() if plan.names else None for _ in range(body.n)]
    try:
        async for i, delta in stream:
            lp = ChoiceLogprobs(content=_logprobs(engine, delta)) if body.logprobs and delta.logprobs else None
            deltas = _stream_deltas(parsers[i], delta.text, bool(delta.finish_reason))
            if lp and not deltas:
                deltas = [ChunkDelta(content="")]
            for k, d in enumerate(deltas):
                yield chunk([ChunkChoice(index=i, delta=d, logprobs=lp if k == 0 else None)])
            if delta.finish_reason:
                prompt_tokens = delta.prompt_tokens
                completion += delta.completion_tokens
                reason = delta.finish_reason
                if parsers[i] is not None and parsers[i].calls and reason == "stop":
                    reason = "tool_calls"
                yield chunk([ChunkChoice(index=i, delta=ChunkDelta(), finish_reason=reason)])
    except Exception as exc:  # the status line is gone: report in the stream, as OpenAI does
        error = {"message": str(exc), "type": "server_error", "param": None, "code": None}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    if with_usage:
        total = prompt_tokens + completion
        yield chunk([], Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=total))
    yield "data: [DONE]\n\n"
