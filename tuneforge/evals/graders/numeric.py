"""`numeric`: the last number in the answer equals the last number in the reference, within a tolerance.

For arithmetic and quantities, "The answer is 85." and "85" are equally right and exact match would fail
one of them. Numbers may carry a sign, a decimal part, an exponent and thousands separators ("1,234.5").
Right when |answer - reference| <= max(abs_tol, rel_tol * |reference|): with both tolerances 0 (the default)
the values must be equal (85 == 85.0). A reference with no number is not graded (None); an answer with no
number scores 0.
"""

from __future__ import annotations

import re

from pydantic import Field

from tuneforge.evals.graders.base import Grade, Grader, GraderSpec
from tuneforge.evals.outputs import Output, reference_of

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])[-+]?\.\d+")


def last_number(text: str) -> float | None:
    """The last number written in text, or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


class NumericSpec(GraderSpec):
    abs_tol: float = Field(0.0, ge=0, description="absolute tolerance: |answer - reference| <= abs_tol passes")
    rel_tol: float = Field(0.0, ge=0, description="relative tolerance: |answer - reference| <= rel_tol * |reference| "
                                                  "passes")


class NumericGrader(Grader):
    name = "numeric"
    Spec = NumericSpec

    def grade(self, row: dict, output: Output) -> Grade:
        reference = reference_of(row)
        expected = last_number(reference.text) if reference is not None else None
        if expected is None:
            return Grade(None, "no number in the reference answer")
        got = last_number(output.text)
        if got is None:
            return Grade(0.0, "no number in the answer")
        ok = abs(got - expected) <= max(self.spec.abs_tol, self.spec.rel_tol * abs(expected))
        return Grade(float(ok), None if ok else f"{got:g} is not {expected:g}")
