"""`by_row`: each row names the grader that fits it, in one of its fields (default `grader`).

A mixed test set (the bundled general-skills suite: instructions graded exactly, arithmetic numerically,
facts by a pattern) needs a different grader per row and still one score per row. The field holds a grader
name (`"numeric"`) or a spec (`{"name": "regex", "pattern": "(?i)\\bparis\\b"}`). Rows without the field use
`default`, or are not graded when there is none. Model-judged graders cannot be chosen per row.
"""

from __future__ import annotations

import json

from pydantic import Field

from tuneforge.errors import UserError
from tuneforge.evals.graders.base import Grade, Grader, GraderSpec
from tuneforge.evals.outputs import Output


class ByRowSpec(GraderSpec):
    field: str = Field("grader", max_length=200,
                       description="the row field naming its grader: a name, or {\"name\": ..., options}")
    default: str | None = Field(None, max_length=100,
                                description="the grader for rows without that field (default: not graded)")


class ByRowGrader(Grader):
    name = "by_row"
    Spec = ByRowSpec

    def __init__(self, spec: ByRowSpec | dict | None = None):
        super().__init__(spec)
        self._graders: dict[str, Grader] = {}

    def grade(self, row: dict, output: Output) -> Grade:
        choice = row.get(self.spec.field, self.spec.default)
        if choice is None:
            return Grade(None, f"the row has no '{self.spec.field}' field")
        return self._grader(choice).grade(row, output)

    def _grader(self, choice: str | dict) -> Grader:
        key = json.dumps(choice, sort_keys=True)
        if key not in self._graders:
            from tuneforge.evals import graders

            name = choice if isinstance(choice, str) else choice.get("name")
            cls = graders.get(str(name))
            if cls.calls_model or cls.pairwise:
                raise UserError(f"'{cls.name}' cannot be chosen per row (it needs a judge model): "
                                "give it as a grader of the run instead")
            self._graders[key] = graders.make(choice)
        return self._graders[key]
