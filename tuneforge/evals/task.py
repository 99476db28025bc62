"""Score a model on a held-out split: generate each row's answer and compare it with the reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.validate import raise_if_invalid, validate_file
from tuneforge.evals.exact import Score, reference_answer, score
from tuneforge.inference.generate import Generator, Prompt, SamplingParams, drop_final_answer
from tuneforge.progress import Callback, ignore


@dataclass
class EvalResult:
    score: Score
    predictions: list[str]
    references: list[str]
    rows: list[dict]


def load_test_rows(path: Path, limit: int | None = None) -> list[dict]:
    report = validate_file(path)
    raise_if_invalid(report)
    rows = [row for _line, row in report.rows]
    return rows[:limit] if limit else rows


def answer_budget(tokenizer, references: list[str]) -> int:
    """Tokens to allow for an answer: a margin over the longest reference (a long ramble cannot be right)."""
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=64)
    return min(2048, int(longest * 1.25) + 16)


def evaluate(
    generator: Generator, rows: list[dict], *, batch_size: int | None = None, max_new_tokens: int | None = None,
    on_event: Callback = ignore,
) -> EvalResult:
    references = [reference_answer(row) for row in rows]
    prompts = [Prompt(drop_final_answer(row["messages"]), row.get("tools")) for row in rows]
    budget = max_new_tokens or answer_budget(generator.tokenizer, references)
    predictions = generator.complete(prompts, SamplingParams(max_new_tokens=budget), batch_size, on_event)
    return EvalResult(score(predictions, references), predictions, references, rows)
