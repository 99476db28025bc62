"""Writing the proxy's records to the store off the request path: a queue drained by one thread, in batches
(one transaction per batch and project), so logging adds no database wait to a proxied call."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from typing import Any

from tuneforge.store import logs
from tuneforge.store.db import Database

log = logging.getLogger("tuneforge.server")


class LogSink:
    def __init__(self, db: Database, linger: float = 0.05, batch: int = 1000):
        self.db, self.linger, self.batch = db, linger, batch
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="tuneforge-log-sink", daemon=True)
        self._thread.start()

    def put(self, project_id: str, record: dict[str, Any]) -> None:
        self._queue.append((project_id, record))
        self._wake.set()

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not (self._stop and not self._queue):
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if not self._stop:
                time.sleep(self.linger)
            while self._queue:
                self._write()

    def _write(self) -> None:
        by_project: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for _ in range(min(self.batch, len(self._queue))):
            project_id, record = self._queue.popleft()
            by_project[project_id].append(record)
        for project_id, records in by_project.items():
            if not self._ingest(project_id, records, attempts=5):  # then one by one: lose only what cannot go in
                for record in records:
                    self._ingest(project_id, [record], attempts=1)

    def _ingest(self, project_id: str, records: list[dict[str, Any]], attempts: int) -> bool:
        for attempt in range(attempts):
            try:
                with self.db.session() as s:
                    logs.ingest(s, project_id, records)
                return True
            except Exception:
                log.exception("writing %d request logs failed (attempt %d)", len(records), attempt + 1)
                time.sleep(0.2 * 2**attempt)
        return False
