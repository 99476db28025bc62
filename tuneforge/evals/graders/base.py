"""The shape every grader has, so the registry, the runner and the report treat them all alike.

A grader is a class with a `name` (its key in the registry), a pydantic `Spec` (its options, each described
once: the CLI flags and the HTTP API's schema are made from it) and either `grade(row, output) -> Grade`
(pointwise: one answer against the row) or, for the pairwise judge, `judge_many(...)`. A `Grade`'s score is in
[0, 1], or None when the grader does not apply to the row (a numeric grader on a row with no number in its
reference): such rows are left out of that grader's mean rather than counted as failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.evals.cache import JudgmentLog
from tuneforge.evals.outputs import Output
from tuneforge.progress import Callback, ignore


class GraderSpec(BaseModel):
    """Options every grader takes."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(None, max_length=200, description="the grader's name in the report "
                              "(default: its kind); needed to tell apart two graders of one kind")


@dataclass
class Grade:
    """One answer's grade: score in [0, 1] (None: does not apply to this row) and why, in a line."""

    score: float | None
    detail: str | None = None

    def to_dict(self) -> dict:
        return {"score": self.score, "detail": self.detail}


def no_stop() -> None:
    """The `check` of callers that never cancel."""


class Grader:
    """Base of all graders; subclasses set `name`, `Spec`, and implement `grade` (pointwise)."""

    name: ClassVar[str]
    Spec: ClassVar[type[GraderSpec]] = GraderSpec
    pairwise: ClassVar[bool] = False
    calls_model: ClassVar[bool] = False  # needs a ChatClient (`client=`) and records its calls

    def __init__(self, spec: GraderSpec | dict | None = None):
        self.spec = spec if isinstance(spec, self.Spec) else self.Spec.model_validate(spec or {})

    @property
    def label(self) -> str:
        return self.spec.label or self.name

    def describe(self) -> dict:
        """The grader as the report records it: its kind and its options, a file option (`prompt_file`,
        `alignment_file`) by the file's name only, since reports reach tenants and the path is the server's."""
        options = self.spec.model_dump(exclude_none=True, mode="json")
        return {"kind": self.name, **{k: Path(v).name if k.endswith("_file") and isinstance(v, str) else v
                                      for k, v in options.items()}}

    def bind(self, log: JudgmentLog) -> None:
        """Where model-calling graders record their calls (the run's judgments.jsonl); others ignore it."""

    def prepare(self, *, check: Callable[[], Any] = no_stop, on_event: Callback = ignore) -> dict | None:
        """Work done once before grading (the criterion judge's alignment check); its result goes in the report."""
        return None

    def grade(self, row: dict, output: Output) -> Grade:
        raise NotImplementedError

    def grade_many(self, items: Sequence[tuple[dict, Output]], *, check: Callable[[], Any] = no_stop,
                   on_done: Callable[[int, Grade], Any] | None = None) -> list[Grade]:
        """Grade (row, output) pairs in order; model-calling graders override this to run calls concurrently."""
        grades = []
        for i, (row, output) in enumerate(items):
            if i % 64 == 0:
                check()
            grades.append(self.grade(row, output))
            if on_done is not None:
                on_done(i, grades[-1])
        return grades
