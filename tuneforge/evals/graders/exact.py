"""`exact`: the answer is right or wrong, with the forgiving-only-of-formatting comparison of `evals/exact.py`
(surrounding whitespace and one markdown fence ignored; JSON compared as values, key order ignored).

For a reference that makes tool calls, the calls are compared instead of the text: same function names in the
same order, arguments equal as JSON values.
"""

from __future__ import annotations

from tuneforge.evals.exact import answers_match, json_equal
from tuneforge.evals.graders.base import Grade, Grader
from tuneforge.evals.outputs import Output, reference_of


class ExactGrader(Grader):
    name = "exact"

    def grade(self, row: dict, output: Output) -> Grade:
        reference = reference_of(row)
        if reference is None:
            return Grade(None, "no reference answer")
        if reference.tool_calls:
            same = json_equal(output.calls(), reference.calls())
            return Grade(float(same), None if same else "tool calls differ from the reference")
        same = answers_match(output.text, reference.text)
        return Grade(float(same), None if same else "differs from the reference")
