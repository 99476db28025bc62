"""Training files to token rows: validate (the same checks as `tuneforge data validate`), render, tokenize."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.preference import EncodedPair, encode_pair
from tuneforge.data.render import Encoded, encode_example
from tuneforge.data.validate import ValidationReport, raise_if_invalid, validate_file
from tuneforge.errors import UserError


@dataclass
class LoadedData:
    examples: list[Encoded] | list[EncodedPair]
    report: ValidationReport
    sha256: str

    @property
    def skipped(self) -> int:
        return len(self.report.problems)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def validate_for_model(path: Path, tokenizer, context: int | None, max_length: int | None, epochs: int = 3,
                       preferences: bool = False):
    """Validate a file with a model's tokenizer; returns the report and each valid row's encoding (a chat file's;
    with `preferences`, a file of preference pairs is checked as such: see `validate_file`)."""
    encoded: dict[int, Encoded] = {}

    def count(row: dict) -> int:
        enc = encode_example(tokenizer, row["messages"], row.get("tools"))
        encoded[id(row)] = enc
        return len(enc.input_ids)

    report = validate_file(path, count_tokens=count, context_length=context, max_length=max_length, epochs=epochs,
                           preferences=preferences)
    return report, encoded


def data_limits(cfg, model) -> dict:
    """The length limits a run's files are loaded with: the model's context, and `max_length` within it."""
    from tuneforge.models.loading import context_length

    ctx = context_length(model)
    return dict(context=ctx, max_length=min(cfg.max_length, ctx) if ctx else cfg.max_length,
                skip_invalid=cfg.skip_invalid)


def _checked(path: Path, tokenizer, context: int | None, max_length: int, skip_invalid: bool, want: str):
    report, encoded = validate_for_model(path, tokenizer, context, max_length, preferences=True)
    if report.format != want and report.rows:
        hint = ("preference pairs: train them with --method dpo" if want == "chat" else
                'chat rows: --method dpo needs preference pairs ({"input": ..., "preferred_output": [...], '
                '"non_preferred_output": [...]})')
        raise UserError(f"{path} holds {hint}")
    if not report.ok and not skip_invalid:
        raise_if_invalid(report)
    return report, encoded


def load_examples(path: Path, tokenizer, *, context: int | None, max_length: int, skip_invalid: bool) -> LoadedData:
    report, encoded = _checked(path, tokenizer, context, max_length, skip_invalid, "chat")
    examples = []
    for _line, row in report.rows:
        enc = encoded[id(row)]
        enc = Encoded(enc.input_ids[:max_length], enc.labels[:max_length])
        if enc.num_trained:
            examples.append(enc)
    if not examples:
        raise UserError(f"{path}: no usable examples (every assistant reply was truncated away or invalid)")
    return LoadedData(examples, report, file_sha256(path))


def load_pairs(path: Path, tokenizer, *, context: int | None, max_length: int, skip_invalid: bool) -> LoadedData:
    """A preference file (OpenAI's pairs, or TRL's rows) as token pairs; pairs whose prompt alone fills
    `max_length` are left out."""
    report, _ = _checked(path, tokenizer, context, max_length, skip_invalid, "preference")
    pairs = [pair for _line, row in report.rows if (pair := encode_pair(tokenizer, row, max_length))]
    if not pairs:
        raise UserError(f"{path}: no usable pairs (every prompt fills --max-length {max_length}, or none is valid)")
    return LoadedData(pairs, report, file_sha256(path))
