"""The bake-off API's objects (`POST /v1/bakeoffs`): shaped like the fine-tuning job (id, status, timestamps,
error, events), with the bake-off's inputs, its child jobs and, once done, its ranking."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tuneforge.evals.execute import SamplingSpec
from tuneforge.server.evals_protocol import Config


class BakeoffCreate(BaseModel):
    bases: list[str] = Field(min_length=2, max_length=8, description="Bases to compare: bundled, the operator's, "
                             "or your ft: / merge: models.")
    datasets: list[str] = Field(min_length=1, max_length=8, description="Dataset ids (train and test splits).")
    judge: str | None = Field(None, description="Pairwise judge model; without one, the first grader decides.")
    reference: str | None = Field(None, description="Also evaluate this model (e.g. the teacher, or `answers`).")
    graders: list[Config] = Field(default_factory=lambda: [{"type": "exact", "name": "exact"}], max_length=8)
    merge_top: int = Field(0, description="2: SLERP-merge the top two bases, fine-tune and evaluate the merge.")
    budget_tokens: int | None = Field(None, ge=1, le=10**9, description="Trained tokens per fine-tune.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Fine-tuning hyperparameters, the "
                                            "same for every fine-tune.")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class BakeoffChild(BaseModel):
    id: str
    kind: str
    status: str


class Bakeoff(BaseModel):
    object: Literal["bakeoff"] = "bakeoff"
    id: str
    created_at: int
    finished_at: int | None = None
    status: str
    bases: list[str]
    datasets: list[str]
    judge: str | None = None
    reference: str | None = None
    merge_top: int
    budget_tokens: int | None = None
    error: dict[str, Any] | None = None
    children: list[BakeoffChild] = Field(description="The fine-tunes, evals and merge it started, oldest first.")
    ranking: list[dict[str, Any]] | None = Field(None, description="Once done: the bases, best first, with CIs.")
    merge: dict[str, Any] | None = None
    report_url: str | None = None


class BakeoffList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Bakeoff]
    has_more: bool
