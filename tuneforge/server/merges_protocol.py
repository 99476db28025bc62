"""The merges API's objects (`POST /v1/merges`): no OpenAI counterpart, so shaped like its fine-tuning jobs
(id, status, created_at / finished_at, error, events) with the merge's own fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tuneforge.server.evals_protocol import Config, Metadata


class MergeSearch(BaseModel):
    params: dict[str, list[float]] = Field(description="Each `$name` of the config -> the values to try.")
    datasets: list[str] = Field(description="Dataset ids: the first `rows` of each test split score a candidate.")
    rows: int = 20
    grader: Config = Field(default_factory=lambda: {"type": "exact", "name": "exact"})
    strategy: str = Field("grid", description="grid (every combination, sampled down to `trials`) or coordinate "
                          "(one value at a time).")
    trials: int = 16
    max_tokens: int | None = None


class MergeCreate(BaseModel):
    name: str = Field(description="The merged model is registered as `merge:NAME` (lowercase letters, digits, "
                      "`.`, `_`, `-`).", min_length=1, max_length=64)
    config: Config | None = Field(None, description="A full-model merge: mergekit's config (any of its methods), "
                                  "naming your project's models (bundled bases, ft: and merge: models).")
    adapters: list[str] | None = Field(None, min_length=2, max_length=8, description="An adapter merge: LoRA "
                                       "fine-tunes of one base, combined into one adapter.")
    weights: list[float] | None = Field(None, description="Adapter merge: one weight per adapter (default equal).")
    method: str = Field("linear", description="Adapter merge: linear, cat, svd, ties, dare_ties, dare_linear or "
                        "magnitude_prune.")
    density: float | None = Field(None, description="Adapter merge: ties / dare_* / magnitude_prune's density.")
    svd_rank: int | None = Field(None, ge=1, le=1024, description="Adapter merge: svd's rank.")
    seed: int = Field(0, description="For the methods that drop at random (dare_*, della).")
    search: MergeSearch | None = Field(None, description="A full-model merge whose config has `$name` values: "
                                       "try them and register the best.")
    metadata: Metadata | None = None


class MergeJob(BaseModel):
    object: Literal["merge"] = "merge"
    id: str
    created_at: int
    finished_at: int | None = None
    status: str
    model: str = Field(description="The model's name once the merge succeeds: `merge:NAME`.")
    type: Literal["model", "adapter"] = Field(description="A full model (mergekit) or an adapter (PEFT).")
    config: dict[str, Any] | None = None
    adapters: list[str] | None = None
    weights: list[float] | None = None
    method: str
    seed: int
    error: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    result: dict[str, Any] | None = Field(None, description="Once done: the manifest's inputs (with sha256), and a "
                                          "search's best candidate (its values and scores).")
    metadata: dict[str, str] | None = None


class MergeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MergeJob]
    has_more: bool
