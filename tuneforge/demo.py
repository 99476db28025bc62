"""The end-to-end demo: validate a task's data, score the base model, fine-tune with LoRA, score again.

It runs with the trainer's defaults, so what it shows is what a user gets without tuning anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from tuneforge import paths
from tuneforge.data.validate import raise_if_invalid, validate_file
from tuneforge.errors import NotFound
from tuneforge.evals import task
from tuneforge.evals.exact import Score
from tuneforge.inference.generate import Generator
from tuneforge.progress import Callback, Event, ignore
from tuneforge.training.config import TrainConfig
from tuneforge.training.trainer import train

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class DemoResult:
    before: Score
    after: Score
    adapter: Path
    train_seconds: float
    train_examples: int
    steps: int


def task_files(name: str) -> tuple[Path, Path]:
    folder = EXAMPLES / name
    if not (folder / "train.jsonl").exists():
        known = sorted(p.name for p in EXAMPLES.glob("*") if (p / "train.jsonl").exists()) if EXAMPLES.exists() else []
        raise NotFound(f"no bundled task '{name}' in {EXAMPLES}: choose one of {', '.join(known) or '(none found)'}, "
                       "or pass --train and --test")
    return folder / "train.jsonl", folder / "test.jsonl"


def run_demo(
    model: str, train_file: Path, test_file: Path, *, test_limit: int | None = None, on_event: Callback = ignore,
    **train_overrides,
) -> DemoResult:
    """Score `model` on `test_file`, fine-tune it on `train_file` with default settings, and score it again."""
    report = validate_file(train_file)
    raise_if_invalid(report)
    on_event(Event("message", f"{train_file}: {report.stats.examples} valid examples"))
    rows = task.load_test_rows(test_file, test_limit)

    on_event(Event("message", f"scoring the base model on {len(rows)} test rows"))
    with Generator(model, on_event=on_event) as base:
        before = task.evaluate(base, rows, on_event=on_event).score

    out = paths.data_dir() / "runs" / f"demo-{train_file.parent.name}-{datetime.now():%Y%m%d-%H%M%S}"
    cfg = TrainConfig(model=model, data=train_file, out=out, **train_overrides)
    on_event(Event("message", f"fine-tuning {model} with LoRA into {out}"))
    t0 = time.perf_counter()
    result = train(cfg, on_event=on_event)
    seconds = time.perf_counter() - t0

    on_event(Event("message", "scoring the fine-tuned model"))
    with Generator(model, adapter=str(out), on_event=on_event) as tuned:
        tuned_eval = task.evaluate(tuned, rows, on_event=on_event)
    after = tuned_eval.score
    demo = DemoResult(before, after, out, seconds, report.stats.examples, result.steps)
    (out / "demo.json").write_text(json.dumps({
        "model": model, "train_file": str(train_file), "test_file": str(test_file), "test_rows": len(rows),
        "before": asdict(before), "after": asdict(after), "train_seconds": round(seconds, 1),
        "train_examples": demo.train_examples, "steps": demo.steps, "predictions_after": tuned_eval.predictions,
    }, indent=2))
    return demo
