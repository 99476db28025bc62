"""Training files to token rows: validate (the same checks as `tuneforge data validate`), render, tokenize."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.render import Encoded, encode_example
from tuneforge.data.validate import ValidationReport, raise_if_invalid, validate_file
from tuneforge.errors import UserError


@dataclass
class LoadedData:
    examples: list[Encoded]
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


def load_examples(path: Path, tokenizer, *, context: int | None, max_length: int, skip_invalid: bool) -> LoadedData:
    report, encoded = validate_for_model(path, tokenizer, context, max_length)
    if not report.ok and not skip_invalid:
        raise_if_invalid(report)
    examples = []
    for _line, row in report.rows:
        enc = encoded[id(row)]
        enc = Encoded(enc.input_ids[:max_length], enc.labels[:max_length])
        if enc.num_trained:
            examples.append(enc)
    if not examples:
        raise UserError(f"{path}: no usable examples (every assistant reply was truncated away or invalid)")
    return LoadedData(examples, report, file_sha256(path))
