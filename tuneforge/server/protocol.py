"""OpenAI's API objects, one pydantic model each, in OpenAI's field order; tuneforge's extensions are marked.

Requests ignore fields they do not know (clients such as lm-evaluation-harness send extras), but validate
every field they use. Responses are what the official `openai` SDK parses.
"""

from __future__ import annotations

import re
import time
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tuneforge.errors import UserError
from tuneforge.inference.tool_calls import ToolPlan
from tuneforge.inference.tool_calls import plan as plan_tools
from tuneforge.store.db import new_id


def _now() -> int:
    return int(time.time())


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- errors
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------- files
class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# ---------------------------------------------------------------- fine-tuning
Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    """OpenAI's three, plus (tuneforge) the TrainConfig fields declared for the API (`hyperparameters()`)."""

    model_config = ConfigDict(extra="allow")
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoHyperparameters(Hyperparameters):
    beta: Auto | Annotated[float, Field(gt=0, le=2)] = "auto"


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(BaseModel):
    type: Literal["supervised", "dpo"] = "supervised"
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None


class FineTuningJobCreate(Request):
    model: str = Field(min_length=1, max_length=300)
    training_file: str = Field(min_length=1, max_length=100)
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    validation_file: str | None = Field(None, max_length=100)
    integrations: list[dict[str, Any]] | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    method: Method | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = None
    estimated_finish: int | None = None
    user_provided_suffix: str | None = None


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool

    @classmethod
    def page(cls, s, job_id: str, *, after: str | None, limit: int) -> EventList:
        """A job's events, newest first, in OpenAI's fine-tuning event shape (every job kind uses it)."""
        from tuneforge.store import jobs

        rows, more = jobs.events(s, job_id, after=after, limit=limit)
        return cls(data=[FineTuningJobEvent(id=e.id, created_at=e.created_at, level=e.level, message=e.message,
                                            data=e.data, type=e.type) for e in rows], has_more=more)


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


# ---------------------------------------------------------------- models
class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


# ---------------------------------------------------------------- chat completions
class CalledFunction(BaseModel):
    name: str
    arguments: str  # a JSON object, as a string


class MessageToolCall(BaseModel):
    """A tool call in an assistant message, in a request or a reply."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class JsonSchemaFormat(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format.json_schema is required when type is 'json_schema'")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class SamplingFields(Request):
    """Fields chat and text completions share."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(None, max_length=300)
    user: str | None = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def bias(self, vocab_size: int) -> dict[int, float]:
        """`logit_bias` as {token id: bias}; UserError for keys that are not token ids of this model."""
        out = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.strip().isdigit() or int(key) >= vocab_size:
                raise UserError(f"logit_bias key '{key}' is not a token id of this model (0 to {vocab_size - 1})",
                                param="logit_bias", code="invalid_value")
            out[int(key)] = float(value)
        return out


TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", message)


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, tool in enumerate(tools or []):
            fn = tool.get("function")
            if tool.get("type") != "function" or not isinstance(fn, dict):
                raise _invalid(f'tools[{i}] must be {{"type": "function", "function": {{"name": ...}}}} '
                               "(only function tools are supported)")
            if not isinstance(fn.get("name"), str) or not TOOL_NAME.fullmatch(fn["name"]):
                raise _invalid(f"tools[{i}].function.name must be 1-64 letters, digits, underscores or dashes")
            if not isinstance(fn.get("parameters", {}), dict):
                raise _invalid(f"tools[{i}].function.parameters must be a JSON schema object")
        if tools is not None and not tools:
            raise _invalid("tools is an empty list: give at least one tool, or leave tools out")
        return tools

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice_shape(cls, choice):
        if choice is None or choice in ("none", "auto", "required"):
            return choice
        try:
            return NamedToolChoice.model_validate(choice)
        except ValidationError:
            raise _invalid('tool_choice must be "none", "auto", "required" or '
                           '{"type": "function", "function": {"name": ...}}') from None

    @field_validator("tool_choice")
    @classmethod
    def _choice_in_tools(cls, choice, info: ValidationInfo):
        tools = info.data.get("tools")
        if choice is None or "tools" not in info.data:  # no choice, or the tools were invalid (said already)
            return choice
        if not tools:
            raise _invalid("tool_choice is only allowed when tools are given: add tools, or leave tool_choice out")
        names = [t["function"]["name"] for t in tools]
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise _invalid(f"tool_choice names function '{choice.function.name}', which is not in tools "
                           f"({', '.join(names)}): add it to tools or name one of them")
        return choice

    @cached_property
    def tool_plan(self) -> ToolPlan:
        """What the tools and tool_choice mean for generation (see inference/tool_calls.py)."""
        choice = self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        return plan_tools(self.tools, choice, self.parallel_tool_calls)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobContent(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobContent] | None = None
    refusal: list[TokenLogprobContent] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[MessageToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl-"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class _Sparse(BaseModel):
    """Serialized without its unset optional fields: a stream's deltas say only what they add (the SDK's
    accumulator would take an explicit null `type` as a new value)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


class FunctionDelta(_Sparse):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Sparse):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    @model_serializer(mode="wrap")
    def _calls_only_when_any(self, handler):
        out = handler(self)
        if out.get("tool_calls") is None:
            out.pop("tool_calls", None)
        return out


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# ---------------------------------------------------------------- text completions
class CompletionRequest(SamplingFields):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)


class CompletionLogprobs(BaseModel):
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl-"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
