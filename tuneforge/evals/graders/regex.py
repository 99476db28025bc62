"""`regex`: the answer must (or must not) match a pattern: a format check, or a key fact that must appear.

The pattern is part of the grader's options; a file whose rows each need their own pattern uses the `by_row`
grader (`"grader": {"name": "regex", "pattern": "..."}` in each row). The pattern is applied to the answer's
text after exact's normalisation (surrounding whitespace and one enclosing code fence removed), by
`re.search` by default: the pattern must occur somewhere, and `^...$` (or mode `fullmatch`) asks for the whole
answer. Score 1 on a match (or, with `negate`, on no match), else 0.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from tuneforge.evals.exact import normalize
from tuneforge.evals.graders.base import Grade, Grader, GraderSpec
from tuneforge.evals.outputs import Output

Flag = Literal["IGNORECASE", "MULTILINE", "DOTALL"]


class RegexSpec(GraderSpec):
    pattern: str = Field(description="a Python regular expression")
    flags: list[Flag] = Field(default_factory=list, description="re flags: IGNORECASE, MULTILINE, DOTALL")
    mode: Literal["search", "fullmatch"] = Field("search", description="search: the pattern occurs somewhere; "
                                                                       "fullmatch: it matches the whole answer")
    negate: bool = Field(False, description="pass when the pattern does NOT match (a forbidden phrase)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}); check the escaping") from None
        return value


class RegexGrader(Grader):
    name = "regex"
    Spec = RegexSpec

    def __init__(self, spec: RegexSpec | dict | None = None):
        super().__init__(spec)
        flags = 0
        for flag in self.spec.flags:
            flags |= getattr(re, flag)
        self._pattern = re.compile(self.spec.pattern, flags)

    def grade(self, row: dict, output: Output) -> Grade:
        text = normalize(output.text)
        found = (self._pattern.fullmatch if self.spec.mode == "fullmatch" else self._pattern.search)(text)
        passed = (found is None) if self.spec.negate else (found is not None)
        if passed:
            return Grade(1.0)
        return Grade(0.0, "matches the forbidden pattern" if self.spec.negate else "does not match the pattern")
