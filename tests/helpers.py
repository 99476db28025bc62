"""Helpers for tests: data rows, JSONL files, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat_row(user: str, answer: str, system: str = "Answer briefly.") -> dict:
    return {"messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]}


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable toy task: 'key=value' pairs to JSON."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pairs = {rng.choice("abcdefgh"): rng.randint(0, 99) for _ in range(rng.randint(1, 3))}
        text = " ".join(f"{k}={v}" for k, v in pairs.items())
        rows.append(chat_row(text, json.dumps(pairs)))
    return rows


def cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `tuneforge` command line in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tuneforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
