"""`criterion`: a PASS/FAIL judge for one written criterion ("the reply never promises a refund"), and the
check that tells whether to believe it.

A model judging a criterion is itself a classifier with errors. Give it an alignment set (answers a person
labelled PASS or FAIL: chat rows whose final assistant message is the answer, plus a `label` field) and the
run first reports the judge's agreement with the person: accuracy, precision and recall of PASS, and
Cohen's kappa (agreement beyond chance: 0 is no better than guessing from the base rates, 1 is perfect).
An unreadable verdict counts as a disagreement there, and as not graded (None) when grading.
Calls are recorded in the run's judgments.jsonl like the pairwise judge's, keyed by the exact request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tuneforge.errors import UserError
from tuneforge.evals.cache import JudgmentLog, key_of
from tuneforge.evals.chat import ChatClient
from tuneforge.evals.graders.base import Grade, Grader, GraderSpec, no_stop
from tuneforge.evals.judging import ask, conversation_text, find_json_object, load_prompt, run_calls
from tuneforge.evals.outputs import Output, prompt_key, prompt_of, reference_of
from tuneforge.progress import Callback, Event, ignore

VERDICT_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["explanation", "verdict"],
        "properties": {"explanation": {"type": "string"}, "verdict": {"type": "string", "enum": ["PASS", "FAIL"]}},
    }},
}


class CriterionSpec(GraderSpec):
    criterion: str = Field(max_length=4000,
                           description="the one criterion an answer must meet, in plain words")
    prompt_file: str | None = Field(None, max_length=1000,
                                    description="your own prompt (a copy of prompts/criterion-v1.md, edited)")
    criteria: str | None = Field(None, max_length=4000,
                                 description="extra guidance for the judge, added to the prompt")
    show_reference: bool = Field(False, description="show the judge the row's reference answer too")
    alignment_file: str | None = Field(None, max_length=1000, description="JSONL of answers a person labelled: "
                                       "chat rows ending with the answer, and a label field of PASS or FAIL")
    label_field: str = Field("label", max_length=200, description="the alignment rows' label field")
    max_tokens: int = Field(512, ge=16, le=4096, description="the longest verdict (explanation included), in "
                                                             "tokens")
    temperature: float = Field(0.0, ge=0, le=2, description="the judge's sampling temperature")
    concurrency: int = Field(4, ge=1, le=32, description="judge calls in flight at once")
    structured: bool = Field(True, description="ask for the verdict with response_format json_schema")


def parse_pass_fail(text: str) -> tuple[str, str]:
    """("PASS" | "FAIL" | "invalid", explanation) from a judge's reply: a JSON object's verdict (or a boolean
    `pass`), else a `"verdict": "PASS"` field of broken JSON, else a first line starting with PASS or FAIL, else
    the only one of the two words in capitals."""
    obj = find_json_object(text, ("verdict", "result", "pass"))
    if obj is not None:
        raw = obj.get("verdict", obj.get("result", obj.get("pass")))
        explanation = str(obj.get("explanation", obj.get("reason", "")) or "")
        if isinstance(raw, bool):
            return ("PASS" if raw else "FAIL"), explanation
        word = str(raw).strip().strip("\"'*. ").upper() if raw is not None else ""
        return (word if word in ("PASS", "FAIL") else "invalid"), explanation
    field = re.search(r'"verdict"\s*:\s*"(PASS|FAIL)"', text, re.IGNORECASE)  # JSON cut short or malformed
    if field:
        return field.group(1).upper(), ""
    first = re.match(r"\W*(PASS|FAIL)\b\W*(.*)", text.strip(), re.IGNORECASE | re.DOTALL)
    if first:
        return first.group(1).upper(), first.group(2).strip()
    words = set(re.findall(r"\b(PASS|FAIL)\b", text))
    return (words.pop(), text.strip()) if len(words) == 1 else ("invalid", "")


def agreement(labels: Sequence[bool], verdicts: Sequence[bool | None]) -> dict:
    """The judge's agreement with a person's labels (True = PASS); a None verdict counts as a disagreement.

    accuracy, precision and recall of PASS, Cohen's kappa; a measure whose denominator is 0 is None.
    """
    if len(labels) != len(verdicts):
        raise ValueError(f"{len(labels)} labels but {len(verdicts)} verdicts: give one verdict per label")
    said = [(not lab) if v is None else v for lab, v in zip(labels, verdicts)]  # unreadable: the wrong answer
    tp = sum(1 for lab, s in zip(labels, said) if lab and s)
    fp = sum(1 for lab, s in zip(labels, said) if not lab and s)
    fn = sum(1 for lab, s in zip(labels, said) if lab and not s)
    tn = len(labels) - tp - fp - fn
    n = len(labels)
    accuracy = (tp + tn) / n if n else None
    expected = ((tp + fn) * (tp + fp) + (tn + fp) * (tn + fn)) / n**2 if n else None
    kappa = (accuracy - expected) / (1 - expected) if n and expected < 1 else None
    return {"n": n, "accuracy": accuracy, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None, "kappa": kappa,
            "invalid": sum(1 for v in verdicts if v is None), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


class CriterionGrader(Grader):
    name = "criterion"
    Spec = CriterionSpec
    calls_model = True

    def __init__(self, spec: CriterionSpec | dict | None = None, *, client: ChatClient,
                 log: JudgmentLog | None = None, alignment_rows: list[dict] | None = None):
        super().__init__(spec)
        self.client = client
        self.log = log if log is not None else JudgmentLog()
        self.prompt = load_prompt(self.spec.prompt_file, "criterion-v1").require("answer", "criterion")
        self.alignment_rows = alignment_rows
        if alignment_rows is None and self.spec.alignment_file:
            self.alignment_rows = _read_jsonl(Path(self.spec.alignment_file))

    @property
    def prompt_version(self) -> str:
        return self.prompt.version

    def describe(self) -> dict:
        return super().describe() | {"model": self.client.model, "prompt_version": self.prompt_version}

    def bind(self, log: JudgmentLog) -> None:
        self.log = log

    def messages(self, row: dict, output: Output) -> list[dict]:
        reference = reference_of(row) if self.spec.show_reference else None
        ref_text = f"\n[Reference answer]\n{reference.shown()}\n[End of reference answer]\n" if reference else ""
        return self.prompt.render(self.spec.criteria, conversation=conversation_text(prompt_of(row)),
                                  reference=ref_text, answer=output.shown(), criterion=self.spec.criterion)

    def grade(self, row: dict, output: Output) -> Grade:
        return self.grade_many([(row, output)])[0]

    def grade_many(self, items: Sequence[tuple[dict, Output]], *, check: Callable[[], Any] = no_stop,
                   on_done: Callable[[int, Grade], Any] | None = None) -> list[Grade]:
        keys, todo = [], {}
        for row, output in items:
            messages = self.messages(row, output)
            key = key_of("criterion", self.client.model, messages, self.spec.max_tokens, self.spec.temperature,
                         self.spec.structured)
            keys.append(key)
            if key not in self.log:
                todo[key] = (messages, prompt_key(prompt_of(row)))
        run_calls(list(todo.items()), self._call, concurrency=self.spec.concurrency, check=check)
        grades = [self._grade(self.log.get(key) or {}) for key in keys]
        for i, grade in enumerate(grades):
            if on_done is not None:
                on_done(i, grade)
        return grades

    def _call(self, item: tuple[str, tuple[list[dict], str]]) -> dict:
        key, (messages, row) = item
        record = {"key": key, "kind": "criterion", "judge_model": self.client.model,
                  "prompt_version": self.prompt_version, "criterion": self.spec.criterion, "row": row}
        return ask(self.client, messages, self.spec, VERDICT_SCHEMA, parse_pass_fail, record, self.log)

    @staticmethod
    def _grade(record: dict) -> Grade:
        verdict = record.get("verdict", "invalid")
        if verdict == "invalid":
            return Grade(None, "unreadable verdict: " + (record.get("error") or record.get("raw", ""))[:200])
        return Grade(1.0 if verdict == "PASS" else 0.0, record.get("explanation") or None)

    def prepare(self, *, check: Callable[[], Any] = no_stop, on_event: Callback = ignore) -> dict | None:
        """The judge's agreement with the alignment set's labels, or None without one."""
        if not self.alignment_rows:
            return None
        labels, items = [], []
        for i, row in enumerate(self.alignment_rows):
            labels.append(_label(row, self.spec.label_field, i))
            answer = reference_of(row)
            if answer is None:
                raise UserError(f"alignment row {i + 1}: it must end with the assistant answer that was labelled")
            items.append((row, answer))
        on_event(Event("message", f"criterion '{self.label}': checking the judge against {len(items)} labels"))
        grades = self.grade_many(items, check=check)
        result = agreement(labels, [None if g.score is None else g.score == 1.0 for g in grades])
        on_event(Event("metrics", f"criterion '{self.label}' alignment", metrics=result))
        return {"alignment": result}


def _label(row: dict, field: str, i: int) -> bool:
    value = row.get(field)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in ("PASS", "FAIL"):
        return value.strip().upper() == "PASS"
    raise UserError(f"alignment row {i + 1}: '{field}' must be PASS or FAIL, got {json.dumps(value)}")


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:  # messages name the file only: they reach tenants, the path is the server's
        raise UserError(f"{path.name}: cannot read the alignment set ({exc.strerror or type(exc).__name__}); "
                        "check the file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path.name}: the alignment set is not UTF-8 text; save it as UTF-8") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise UserError(f"{path.name}:{n}: not valid JSON ({exc}); write one JSON object per line") from None
    return rows
