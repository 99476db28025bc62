"""Testing criteria, as the evals API and the CLI write them, to graders.

A criterion is OpenAI's shape: `{"type": KIND, "name": LABEL, ...options}` where KIND is a grader of
`tuneforge.evals.graders` (`exact`, `json`, `regex`, `numeric`, `judge`, `criterion`, `by_row`) and the
options are that grader's spec; graders that call a model also take `"model"` (the judge). OpenAI's
`string_check` with operation `eq` is `exact`. `check` normalises a list once, when an eval is created, so a
bad criterion is refused before any run exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.errors import UserError
from tuneforge.evals import graders

MAX_CRITERIA = 16


@dataclass(frozen=True)
class Criterion:
    spec: dict[str, Any]  # graders.make's spec: {"name": KIND, "label": ..., options}
    model: str | None  # the judge model, for graders that call one

    @property
    def kind(self) -> str:
        return self.spec["name"]

    @property
    def pairwise(self) -> bool:
        return graders.get(self.kind).pairwise


def check(criteria: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The criteria in normal form (`type`, `name`, options); UserError naming the first bad one."""
    if not criteria or len(criteria) > MAX_CRITERIA:
        raise UserError(f"give between 1 and {MAX_CRITERIA} testing criteria", param="testing_criteria")
    out = []
    for i, raw in enumerate(criteria):
        c = parse(raw, where=f"testing_criteria[{i}]")
        _validate(c, where=f"testing_criteria[{i}]")
        out.append({"type": c.kind, "name": c.spec.get("label") or c.kind, **_options(c.spec),
                    **({"model": c.model} if c.model else {})})
    labels = [c["name"] for c in out]
    if len(set(labels)) != len(labels):
        raise UserError("two testing criteria have the same name: give each a distinct `name`",
                        param="testing_criteria")
    if sum(graders.get(c["type"]).pairwise for c in out) > 1:
        raise UserError("at most one pairwise judge per eval", param="testing_criteria")
    return out


def parse(raw: dict[str, Any], *, where: str = "testing_criteria") -> Criterion:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise UserError(f"{where}: a criterion is an object with a `type` (one of {', '.join(graders.names())})",
                        param=where)
    options = {k: v for k, v in raw.items() if k not in ("type", "name", "model")}
    kind = raw["type"]
    if kind == "string_check":
        if options.get("operation", "eq") != "eq":
            raise UserError(f"{where}: string_check supports operation 'eq' only (it is the `exact` grader)",
                            param=where)
        kind, options = "exact", {}
    cls = graders.get(kind)
    model = raw.get("model")
    if cls.calls_model and not (isinstance(model, str) and model):
        raise UserError(f"{where}: the {kind} grader needs a `model` (the judge: a model served here or through "
                        "an upstream, e.g. gpt-4o)", param=f"{where}.model")
    label = raw.get("name")
    return Criterion({"name": kind, **({"label": label} if label and label != kind else {}), **options},
                     model if cls.calls_model else None)


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in ("name", "label")}


def _validate(c: Criterion, *, where: str) -> None:
    """The options against the grader's spec, without building the grader (which may read files)."""
    from pydantic import ValidationError

    cls = graders.get(c.kind)
    try:
        cls.Spec.model_validate({k: v for k, v in c.spec.items() if k != "name"})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"])) or "spec"
        raise UserError(f"{where}.{field}: {err['msg']} (the {c.kind} grader's options: "
                        f"{', '.join(cls.Spec.model_fields)})", param=f"{where}.{field}") from None
