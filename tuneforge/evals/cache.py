"""Append-only JSONL logs that make an eval run resumable: outputs.jsonl and judgments.jsonl in its work folder.

Generation and judge calls are the expensive part of an eval (GPU time, upstream money), so each result is
appended and fsynced the moment it exists, keyed by a hash of everything that determines it. A run that was
cancelled, killed or requeued loads the logs and asks only for what is missing. A line torn by a kill in
mid-write is skipped on load (its work is simply done again). Appends are serialised by a lock, so judge
threads can write concurrently.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def key_of(*parts: Any) -> str:
    """sha256 of the parts' canonical JSON: the cache key of a generation or a judge call."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class JsonlLog:
    """Records by their `key`, loaded from a JSONL file (or only in memory when path is None)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.records: dict[str, dict] = {}
        self.added = 0  # records appended by this process (tests count new work with it)
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        with path.open("rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # a line cut short by a kill: that item is redone
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    self.records[record["key"]] = record

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def add(self, *records: dict) -> None:
        """Keep the records and append them to the file, flushed and fsynced before returning."""
        with self._lock:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    for record in records:
                        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            for record in records:
                self.records[record["key"]] = record
            self.added += len(records)


class OutputCache(JsonlLog):
    """outputs.jsonl: {key, model, output, time}; key = sha256(model cache id, prompt, sampling)."""


class JudgmentLog(JsonlLog):
    """judgments.jsonl: one record per judge call; key = sha256(judge model, the exact request sent)."""
