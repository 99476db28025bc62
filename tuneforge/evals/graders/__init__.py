"""The graders by name: one small module each, registered here, built from a name or a spec dict.

    graders.names()                                   # ['by_row', 'criterion', 'exact', 'json', ...]
    graders.get("numeric").Spec                       # the options, each with its description
    graders.make("exact")
    graders.make({"name": "numeric", "abs_tol": 0.01})
    graders.make({"name": "judge", "criteria": "..."}, client=OpenAIChatClient.from_upstreams("gpt-4o"))

Graders with `calls_model` need `client=` (a `tuneforge.evals.chat.ChatClient`); the others take no extra
arguments. A spec's unknown option fails with the list of the grader's options.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tuneforge.errors import UserError
from tuneforge.evals.graders.base import Grade, Grader, GraderSpec
from tuneforge.evals.graders.by_row import ByRowGrader
from tuneforge.evals.graders.criterion import CriterionGrader
from tuneforge.evals.graders.exact import ExactGrader
from tuneforge.evals.graders.json_fields import JsonFieldsGrader
from tuneforge.evals.graders.judge import PairwiseJudge
from tuneforge.evals.graders.numeric import NumericGrader
from tuneforge.evals.graders.regex import RegexGrader

__all__ = ["GRADERS", "Grade", "Grader", "GraderSpec", "get", "make", "names"]

GRADERS: dict[str, type[Grader]] = {
    cls.name: cls
    for cls in (ExactGrader, JsonFieldsGrader, RegexGrader, NumericGrader, ByRowGrader, PairwiseJudge,
                CriterionGrader)
}


def names() -> list[str]:
    return sorted(GRADERS)


def get(name: str) -> type[Grader]:
    """The grader class registered as `name`."""
    if name not in GRADERS:
        raise UserError(f"unknown grader '{name}': choose one of {', '.join(names())}", code="unknown_grader")
    return GRADERS[name]


def make(spec: str | dict, **deps: Any) -> Grader:
    """A grader from its name or `{"name": ..., option: value, ...}`; deps (client=...) go to model graders."""
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    if not isinstance(options.get("name"), str):
        raise UserError(f"a grader spec needs a 'name' (one of {', '.join(names())}), got {options!r}")
    cls = get(options.pop("name"))
    try:
        parsed = cls.Spec.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        known = ", ".join(cls.Spec.model_fields)
        raise UserError(f"grader '{cls.name}': {problems} (its options: {known})", code="invalid_grader") from None
    if cls.calls_model:
        if deps.get("client") is None:
            raise UserError(f"grader '{cls.name}' needs a judge model: pass client= (a ChatClient)")
        return cls(parsed, **deps)
    return cls(parsed)
