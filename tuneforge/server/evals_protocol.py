"""The evals API's objects, shaped after OpenAI's Evals API where the idea is the same (`eval`, `eval.run`,
`eval.run.output_item`, their lists), so `client.evals` of the official SDK works for what overlaps.

Extensions, grouped under a comment in each object: several models in one run (`models`, pairwise judging
between them), tuneforge's graders as testing criteria (`{"type": "exact" | "json" | "regex" | "numeric" |
"judge" | "criterion", ...}`), the run's report (`report_url`, `/report`, `/report.html`) and its events.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

MAX_CONFIG_BYTES = 64 * 1024


def _small(value: Any) -> Any:
    if len(json.dumps(value)) > MAX_CONFIG_BYTES:
        raise ValueError(f"at most {MAX_CONFIG_BYTES // 1024} KB of JSON")
    return value


# OpenAI's metadata: at most 16 pairs, keys up to 64 characters, values up to 512
Metadata = Annotated[dict[Annotated[str, StringConstraints(max_length=64)],
                          Annotated[str, StringConstraints(max_length=512)]], Field(max_length=16)]
Config = Annotated[dict[str, Any], AfterValidator(_small)]


class EvalCreate(BaseModel):
    name: str | None = Field(None, max_length=200)
    data_source_config: Config = Field(
        default_factory=lambda: {"type": "custom", "item_schema": {"type": "object"}, "include_sample_schema": True},
        description="OpenAI's data source config; rows are chat rows (`messages` ending in the reference answer).")
    testing_criteria: list[Config] = Field(
        min_length=1, max_length=16, description="Graders: `{\"type\": NAME, \"name\": LABEL, ...its options}`; "
        "OpenAI's `string_check` with operation `eq` is the `exact` grader.")
    metadata: Metadata | None = None


class EvalUpdate(BaseModel):
    name: str | None = Field(None, max_length=200)
    metadata: Metadata | None = None


class EvalObject(BaseModel):
    object: Literal["eval"] = "eval"
    id: str
    created_at: int
    data_source_config: dict[str, Any]
    metadata: dict[str, str] | None = None
    name: str
    testing_criteria: list[dict[str, Any]]


class EvalList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvalObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class EvalDeleted(BaseModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool = True
    eval_id: str


class RunCreate(BaseModel):
    name: str | None = Field(None, max_length=200)
    data_source: dict[str, Any] = Field(
        description="OpenAI's `completions` (one `model`) or `jsonl` (answers already in each item's `sample`) "
        "data source, or tuneforge's `{\"type\": \"tuneforge\", \"models\": [...], \"reference\": MODEL, "
        "\"source\": {...}}` for several models judged against each other.")
    metadata: Metadata | None = None


class ResultCounts(BaseModel):
    errored: int = 0
    failed: int = 0
    passed: int = 0
    total: int = 0


class PerTestingCriteriaResult(BaseModel):
    failed: int
    passed: int
    testing_criteria: str


class PerModelUsage(BaseModel):
    cached_tokens: int = 0
    completion_tokens: int = 0
    invocation_count: int = 0
    model_name: str
    prompt_tokens: int = 0
    total_tokens: int = 0


class RunError(BaseModel):
    code: str
    message: str


class EvalRun(BaseModel):
    object: Literal["eval.run"] = "eval.run"
    id: str
    created_at: int
    data_source: dict[str, Any]
    error: RunError | None = None
    eval_id: str
    metadata: dict[str, str] | None = None
    model: str
    name: str
    per_model_usage: list[PerModelUsage] = Field(default_factory=list)
    per_testing_criteria_results: list[PerTestingCriteriaResult] = Field(default_factory=list)
    report_url: str
    result_counts: ResultCounts
    status: Literal["queued", "in_progress", "completed", "failed", "canceled"]
    # --- tuneforge extensions
    models: list[str]
    summary: dict[str, Any] | None = Field(None, description="Means with CIs, win rates and ratings, when done.")


class RunDeleted(BaseModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool = True
    run_id: str


class RunEvent(BaseModel):
    object: Literal["eval.run.event"] = "eval.run.event"
    id: str
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None = None
    type: str


class RunEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RunEvent]
    has_more: bool = False


class RunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvalRun]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class OutputItemResult(BaseModel):
    name: str
    passed: bool
    score: float
    type: str | None = None
    sample: dict[str, Any] | None = None  # the grader's detail (e.g. the judge's verdict)


class OutputItem(BaseModel):
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    id: str
    created_at: int
    datasource_item: dict[str, Any]
    datasource_item_id: int
    eval_id: str
    results: list[OutputItemResult]
    run_id: str
    sample: dict[str, Any]
    status: Literal["pass", "fail", "error"]


class OutputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OutputItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
