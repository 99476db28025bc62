"""`judge`: pairwise LLM-as-judge, built so that a biased judge cannot manufacture a winner.

LLM judges favour whichever answer they see first (or second). So every pair is judged twice, once in each
order, and a model wins the row only if it wins both; any disagreement, a tie in either order or an
unreadable verdict is a tie. Answers that are the same after exact's normalisation tie without a call. The
share of pairs whose two orders agreed is the judge's position consistency: a judge that always picks the
first answer scores 0, and its verdicts are all ties.

The judge is any `ChatClient` (an upstream GPT-4-class model or a model this platform serves). Its prompt
is a versioned file (`prompts/pairwise-v1.md`, or the user's own, plus the user's criteria text); the verdict
is asked for as JSON `{"explanation", "winner": "A"|"B"|"tie"}` (with response_format json_schema where the
server takes it) and read robustly from whatever comes back, since weak judges write anything. Every call is
recorded in the run's judgments.jsonl as it returns (judge model, prompt version, which answer was shown
first, raw reply, parsed verdict, explanation), keyed by a hash of the exact request, so a resumed run never
pays for a judgment twice.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from tuneforge.evals.cache import JudgmentLog, key_of
from tuneforge.evals.chat import ChatClient
from tuneforge.evals.graders.base import Grader, GraderSpec, no_stop
from tuneforge.evals.judging import ask, conversation_text, find_json_object, load_prompt, run_calls
from tuneforge.evals.outputs import Output, prompt_key, prompt_of, reference_of

VERDICT_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["explanation", "winner"],
        "properties": {"explanation": {"type": "string"}, "winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    }},
}


class JudgeSpec(GraderSpec):
    prompt_file: str | None = Field(None, max_length=1000, description="your own judge prompt (a copy of the "
                                    "bundled prompts/pairwise-v1.md, edited); default: pairwise-v1")
    criteria: str | None = Field(None, max_length=4000,
                                 description="your criteria for a better answer, added to the prompt")
    show_reference: bool = Field(False, description="show the judge the row's reference answer too")
    max_tokens: int = Field(1024, ge=16, le=4096, description="the longest verdict (explanation included), in "
                                                              "tokens")
    temperature: float = Field(0.0, ge=0, le=2, description="the judge's sampling temperature")
    concurrency: int = Field(4, ge=1, le=32, description="judge calls in flight at once")
    structured: bool = Field(True, description="ask for the verdict with response_format json_schema")


_WINNERS = {"a": "A", "answer a": "A", "[[a]]": "A", "b": "B", "answer b": "B", "[[b]]": "B",
            "tie": "tie", "[[c]]": "tie", "[[tie]]": "tie", "draw": "tie", "equal": "tie", "neither": "tie",
            "both": "tie", "none": "tie"}
# "B", "A: ...", "B) ...", "Winner: tie", "A is better": the letter alone, then punctuation, a line end or is/wins
_LEADING = re.compile(r"^(?:winner\s*[:=]?\s*|answer\s+)?(A|B|tie)(?:\s*$|\s*[.:)\],;\n-]\s*(.*)|\s+(?:is|wins)\b(.*))",
                      re.IGNORECASE | re.DOTALL)


def parse_verdict(text: str) -> tuple[str, str]:
    """(winner, explanation) from a judge's reply; winner is "A", "B", "tie", or "invalid" when unreadable.

    Reads the first JSON object anywhere in the text (fences and prose tolerated), else a `"winner": "B"` field
    of JSON that was cut short or is malformed, else an MT-Bench-style [[A]] / [[B]] / [[C]], else a first line
    that starts with the bare letter ("B", "A: ...", "Winner: tie").
    """
    obj = find_json_object(text, ("winner", "verdict", "better"))
    if obj is not None:
        raw = obj.get("winner", obj.get("verdict", obj.get("better")))
        winner = _WINNERS.get(str(raw).strip().strip("\"'*. ").lower(), "invalid") if raw is not None else "invalid"
        explanation = obj.get("explanation", obj.get("reason", obj.get("reasoning", "")))
        return winner, str(explanation or "")
    field = re.search(r'"winner"\s*:\s*"(A|B|tie)"', text, re.IGNORECASE)  # JSON cut short or malformed
    if field and (field.group(1) in ("A", "B") or field.group(1).lower() == "tie"):
        return _WINNERS[field.group(1).lower()], ""
    marks = set(re.findall(r"\[\[(A|B|C|tie)\]\]", text, re.IGNORECASE))
    if len(marks) == 1:
        return _WINNERS[f"[[{marks.pop().lower()}]]"], text.strip()
    first = text.strip().lstrip("*#>`\"' ").strip()
    match = _LEADING.match(first)
    if match and (match.group(1) in ("A", "B") or match.group(1).lower() == "tie"):
        return _WINNERS[match.group(1).lower()], (match.group(2) or match.group(3) or "").strip()
    return "invalid", ""


@dataclass
class PairTask:
    """One row's pair of answers to judge: model `a`'s answer against model `b`'s."""

    row: dict
    a: str
    b: str
    out_a: Output
    out_b: Output


@dataclass
class PairVerdict:
    """The judge's decision on one pair: winner is a model's name or "tie"."""

    a: str
    b: str
    winner: str
    identical: bool
    consistent: bool | None  # did the two orders agree (None: identical answers, not judged)
    judgments: list[dict] = field(default_factory=list)

    @property
    def outcome(self) -> float:
        """1 if a won, 0 if b won, 0.5 for a tie (the win-rate statistics' unit)."""
        return 1.0 if self.winner == self.a else 0.0 if self.winner == self.b else 0.5

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "winner": self.winner, "identical": self.identical,
                "consistent": self.consistent, "judgments": self.judgments}


class PairwiseJudge(Grader):
    name = "judge"
    Spec = JudgeSpec
    pairwise = True
    calls_model = True

    def __init__(self, spec: JudgeSpec | dict | None = None, *, client: ChatClient, log: JudgmentLog | None = None):
        super().__init__(spec)
        self.client = client
        self.log = log if log is not None else JudgmentLog()
        self.prompt = load_prompt(self.spec.prompt_file, "pairwise-v1").require("answer_a", "answer_b")

    @property
    def prompt_version(self) -> str:
        return self.prompt.version

    def describe(self) -> dict:
        return super().describe() | {"model": self.client.model, "prompt_version": self.prompt_version}

    def bind(self, log: JudgmentLog) -> None:
        self.log = log

    def messages(self, row: dict, first: Output, second: Output) -> list[dict]:
        """The judge request for one order: `first` is shown as answer A."""
        reference = reference_of(row) if self.spec.show_reference else None
        ref_text = f"\n[Reference answer]\n{reference.shown()}\n[End of reference answer]\n" if reference else ""
        return self.prompt.render(self.spec.criteria, conversation=conversation_text(prompt_of(row)),
                                  reference=ref_text, answer_a=first.shown(), answer_b=second.shown())

    def judge(self, task: PairTask) -> PairVerdict:
        return self.judge_many([task])[0]

    def judge_many(self, tasks: Sequence[PairTask], *, check: Callable[[], Any] = no_stop,
                   on_done: Callable[[int, int], Any] | None = None) -> list[PairVerdict]:
        """Every pair judged in both orders (only the calls not in the log are made; identical pairs: none).

        on_done(calls finished, calls to make) reports progress on the calling thread.
        """
        requests: dict[str, tuple[list[dict], dict]] = {}
        plans = []
        for task in tasks:
            if task.out_a.canonical() == task.out_b.canonical():
                plans.append(None)
                continue
            plan = []
            for first, second, shown_first in ((task.out_a, task.out_b, task.a), (task.out_b, task.out_a, task.b)):
                messages = self.messages(task.row, first, second)
                key = key_of("pairwise", self.client.model, messages, self.spec.max_tokens, self.spec.temperature,
                             self.spec.structured)
                plan.append((key, shown_first))
                if key not in self.log and key not in requests:
                    requests[key] = (messages, {"row": prompt_key(prompt_of(task.row)), "shown_first": shown_first})
            plans.append(plan)
        todo = list(requests.items())
        finished = itertools.count(1)
        run_calls(todo, self._call, concurrency=self.spec.concurrency, check=check,
                  on_done=None if on_done is None else lambda _i, _r: on_done(next(finished), len(todo)))
        return [self._verdict(task, plan) for task, plan in zip(tasks, plans)]

    def _call(self, item: tuple[str, tuple[list[dict], dict]]) -> dict:
        key, (messages, about) = item
        record = {"key": key, "kind": "pairwise", "judge_model": self.client.model,
                  "prompt_version": self.prompt_version, "criteria": self.spec.criteria, **about}
        return ask(self.client, messages, self.spec, VERDICT_SCHEMA, parse_verdict, record, self.log)

    def _verdict(self, task: PairTask, plan: list[tuple[str, str]] | None) -> PairVerdict:
        if plan is None:
            return PairVerdict(task.a, task.b, "tie", identical=True, consistent=None)
        judgments, picks = [], []
        for key, shown_first in plan:
            record = self.log.get(key) or {}
            shown_second = task.b if shown_first == task.a else task.a
            verdict = record.get("verdict", "invalid")
            pick = shown_first if verdict == "A" else shown_second if verdict == "B" else "tie"
            picks.append(pick)
            judgments.append({"shown_first": shown_first, "verdict": verdict, "winner": pick,
                              "explanation": record.get("explanation", ""), "raw": record.get("raw", ""),
                              "judge_model": record.get("judge_model"), "prompt_version": record.get("prompt_version"),
                              **({"error": record["error"]} if record.get("error") else {})})
        winner = picks[0] if picks[0] == picks[1] else "tie"
        valid = all(j["verdict"] != "invalid" for j in judgments)  # two unreadable replies do not "agree"
        return PairVerdict(task.a, task.b, winner, identical=False, consistent=valid and picks[0] == picks[1],
                           judgments=judgments)


def position_consistency(verdicts: Sequence[PairVerdict]) -> float | None:
    """The share of judged (not identical) pairs whose two orders gave the same valid verdict (the same winner,
    or both a tie); None when nothing was judged."""
    judged = [v.consistent for v in verdicts if v.consistent is not None]
    return sum(judged) / len(judged) if judged else None
