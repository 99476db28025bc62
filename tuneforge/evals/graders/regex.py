"""`regex`: the answer must (or must not) match a pattern: a format check, or a key fact that must appear.

The pattern is part of the grader's options; a file whose rows each need their own pattern uses the `by_row`
grader (`"grader": {"name": "regex", "pattern": "..."}` in each row). The pattern is applied to the answer's
text after exact's normalisation (surrounding whitespace and one enclosing code fence removed), by
a search by default: the pattern must occur somewhere, and `^...$` (or mode `fullmatch`) asks for the whole
answer. Score 1 on a match (or, with `negate`, on no match), else 0.

Patterns come from tenants and run in a shared worker, so they run on the `regex` package (its default
VERSION0 syntax is Python `re`'s) with a time limit per match: a pattern that backtracks for ever, such as
`(a+)+$` on a long answer, scores the row 0 with a detail saying it timed out instead of stalling the run.
"""

from __future__ import annotations

from typing import Literal

import regex
from pydantic import Field, field_validator

from tuneforge.evals.exact import normalize
from tuneforge.evals.graders.base import Grade, Grader, GraderSpec
from tuneforge.evals.outputs import Output

Flag = Literal["IGNORECASE", "MULTILINE", "DOTALL"]
MATCH_TIMEOUT_S = 1.0  # per answer: far more than any sane pattern needs, little for a run to wait


class RegexSpec(GraderSpec):
    pattern: str = Field(max_length=1000, description="a Python regular expression")
    flags: list[Flag] = Field(default_factory=list, max_length=3,
                              description="re flags: IGNORECASE, MULTILINE, DOTALL")
    mode: Literal["search", "fullmatch"] = Field("search", description="search: the pattern occurs somewhere; "
                                                                       "fullmatch: it matches the whole answer")
    negate: bool = Field(False, description="pass when the pattern does NOT match (a forbidden phrase)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            regex.compile(value)
        except regex.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}); check the escaping") from None
        return value


class RegexGrader(Grader):
    name = "regex"
    Spec = RegexSpec

    def __init__(self, spec: RegexSpec | dict | None = None):
        super().__init__(spec)
        flags = 0
        for flag in self.spec.flags:
            flags |= getattr(regex, flag)
        self._pattern = regex.compile(self.spec.pattern, flags)

    def grade(self, row: dict, output: Output) -> Grade:
        text = normalize(output.text)
        match = self._pattern.fullmatch if self.spec.mode == "fullmatch" else self._pattern.search
        try:
            found = match(text, timeout=MATCH_TIMEOUT_S)
        except TimeoutError:
            return Grade(0.0, f"the pattern took over {MATCH_TIMEOUT_S:g}s on this answer (timed out): "
                              "simplify it (nested repeats such as (a+)+ backtrack without end)")
        passed = (found is None) if self.spec.negate else (found is not None)
        if passed:
            return Grade(1.0)
        return Grade(0.0, "matches the forbidden pattern" if self.spec.negate else "does not match the pattern")
