"""tuneforge's own API objects for capture: log reports, logs, cost totals, datasets. Not OpenAI's (it has no
such endpoints), but shaped like its objects: `object`, `id`, `created_at`, lists as `{data, has_more}`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


# ---------------------------------------------------------------- reporting
class LogRecord(BaseModel):
    """One captured call, as the SDK wrapper reports it."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                    description="Chosen by the reporter; a second delivery of the same id is ignored.")
    source: Literal["sdk", "proxy"] = "sdk"
    model: str | None = Field(default=None, max_length=300)
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    error: dict[str, Any] | str | None = None
    started_at: float = Field(ge=0)
    latency_ms: float = Field(default=0.0, ge=0)
    ttft_ms: float | None = None
    stream: bool = False
    tags: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)],
               Annotated[str, StringConstraints(max_length=500)] | int | float | bool] = Field(
        default_factory=dict, max_length=50)


class LogReport(BaseModel):
    logs: list[LogRecord] = Field(max_length=5000)


class LogReportResult(BaseModel):
    object: Literal["log.report"] = "log.report"
    received: int
    stored: int = Field(description="New records; the rest were already stored (redelivered).")


# ---------------------------------------------------------------- logs
class LogObject(BaseModel):
    id: str
    object: Literal["log"] = "log"
    source: str
    model: str
    status: int | None
    ok: bool
    error: dict[str, Any] | str | None
    started_at: float
    latency_ms: float
    ttft_ms: float | None
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    tags: dict[str, Any]
    request: dict[str, Any] | None = None  # in `show`, not in lists
    response: dict[str, Any] | None = None


class LogList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LogObject]
    has_more: bool
    total: int


class CostRow(BaseModel):
    key: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_calls: int = Field(description="Calls not in cost_usd: the model is missing from the pricing table, "
                                            "or the call reported no usage (an error, a stream without "
                                            "stream_options.include_usage).")


class CostReport(BaseModel):
    object: Literal["cost.report"] = "cost.report"
    by: str
    data: list[CostRow]
    total_cost_usd: float


# ---------------------------------------------------------------- datasets
class LogFilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tags: list[str] = Field(default_factory=list, description="key=value (exact) or key~text (contains)")
    status: str | None = None
    since: str | float | None = None
    until: str | float | None = None
    search: str | None = None
    ids: list[str] = Field(default_factory=list, max_length=1000, description="Only these log ids.")


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    logs: LogFilterBody | None = Field(default=None, description="Take successful calls matching this filter...")
    file_id: str | None = Field(default=None, description="...or the conversations of an uploaded fine-tune file.")
    sample: int | None = Field(default=None, description="At most this many entries, drawn at random.")
    dedupe: Literal["none", "exact", "near"] = "near"
    near_threshold: float = Field(default=0.8, gt=0, le=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    label: str | None = Field(default=None, description="Stratify the split: tag.KEY or reply.FIELD")
    seed: int = 0
    pruning_rules: list[str] = Field(default_factory=list,
                                     description="Fixed texts cut from training inputs and from requests to "
                                                 "models trained on this dataset.")


class DatasetJob(BaseModel):
    id: str
    status: str
    error: dict[str, Any] | None = None


class DatasetObject(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    kind: Literal["chat", "preference"] = "chat"
    created_at: int
    status: str
    source: dict[str, Any]
    params: dict[str, Any]
    pruning_rules: list[str]
    counts: dict[str, Any]
    parent_id: str | None = None
    job: DatasetJob | None = None


class DatasetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetObject]
    has_more: bool = False


class DatasetEntryObject(BaseModel):
    id: str
    object: Literal["dataset.entry"] = "dataset.entry"
    position: int
    split: str
    messages: list[dict[str, Any]]
    rejected: dict[str, Any] | None = Field(default=None, description="A pair's non-preferred answer (`messages` "
                                            "ends in the preferred one).")
    tools: list[Any] | None = None
    label: str | None = None
    lineage: dict[str, Any]
    answer_model: str | None = None


class DatasetEntryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetEntryObject]
    has_more: bool


class RelabelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The teacher: a model an upstream serves.")
    name: str | None = None
    concurrency: int = Field(default=8, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=20)


# ---------------------------------------------------------------- preference datasets
class FromEvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(description="A finished eval run (evalrun_...).")
    by: str = Field(default="judge", max_length=200, description="Who decides each pair: `judge` (verdicts won in "
                    "both orders) or a pointwise grader's name (one model scores 1, the other below).")
    min_gap: float | None = Field(default=None, gt=0, le=1, description="With a grader: pair any two models whose "
                                  "scores differ by at least this, instead of 1 vs below 1.")
    name: str | None = Field(default=None, min_length=1, max_length=200)


class FromEvalDataset(DatasetObject):
    warnings: list[str] = Field(default_factory=list)


class SelfPlayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The model that answers: a bundled base or the project's ft: model.")
    training_file: str | None = Field(default=None, description="Prompts: an uploaded fine-tune file (file-...)...")
    dataset: str | None = Field(default=None, description="...or a dataset's split (ds-...).")
    split: Literal["train", "test"] = Field(default="train", description="dataset: which split.")
    grader: Literal["exact", "json"] = Field(default="exact", description="Grades answers against the row's "
                                             "reference answer.")
    k: int = Field(default=4, ge=1, le=16, description="Answers sampled per prompt.")
    temperature: float = Field(default=1.0, gt=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=2048, description="Tokens per answer (default: a "
                                   "margin over the longest reference).")
    limit: int | None = Field(default=None, ge=1, le=2000, description="Only the first N prompts.")
    seed: int = 0
    use_reference: bool = Field(default=True, description="When no answer passes, prefer the reference answer "
                                "to the worst one (recorded in the lineage).")
    name: str | None = Field(default=None, min_length=1, max_length=200)
