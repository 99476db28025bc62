"""Delivering captured calls to the platform in the background: batched, written ahead to a spool on disk,
retried with backoff. `report()` only appends to a queue; it never blocks the app's call and never raises.

One reporter thread per (platform, key, spool folder) in a process, shared by every client made with them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tuneforge import paths
from tuneforge.capture.spool import Spool

log = logging.getLogger("tuneforge.capture")
# a record: a dict, JSON text, or a callable returning either (called in the reporter's thread)
Record = dict[str, Any] | str | Callable[[], dict[str, Any] | str]
SPLITTABLE = {400, 413, 422}  # too big, or a record the platform will not take: halve the batch to isolate it
MAX_BATCH_BYTES = 4 << 20  # well under the platform's 8 MB request limit
MAX_SERVER_ERRORS = 5  # a batch that keeps getting HTTP 500 (not 502-504: those are outages) is set aside


def logs_url(base_url: str) -> str:
    """The platform root (`http://host:8000`) or its API root (`.../v1`) -> the log-ingest URL."""
    root = base_url.rstrip("/")
    root = root[: -len("/v1")] if root.endswith("/v1") else root
    return root + "/v1/logs"


class Reporter:
    def __init__(self, base_url: str, api_key: str, spool_dir: Path | None = None, *, batch_size: int = 256,
                 linger: float = 0.25, max_backoff: float = 30.0):
        self.url, self.api_key = logs_url(base_url), api_key
        digest = hashlib.sha256(f"{self.url}\n{api_key}".encode()).hexdigest()[:16]
        self.spool = Spool(spool_dir or paths.data_dir() / "spool" / digest)
        self.batch_size, self.linger, self.max_backoff = batch_size, linger, max_backoff
        self._queue: deque[Record] = deque()
        self._wake = threading.Condition()
        self._hurry = threading.Event()  # flush(): stop lingering
        self._backoff, self._retry_at, self._server_errors = 0.0, 0.0, 0
        self._warned: set[str] = set()
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0),
                                  headers={"authorization": f"Bearer {api_key}"})
        self._thread = threading.Thread(target=self._run, name="tuneforge-reporter", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def report(self, record: Record) -> None:
        self._queue.append(record)
        if len(self._queue) in (1, self.batch_size):
            with self._wake:
                self._wake.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record reported so far has been answered by the platform (True), or until
        `timeout` seconds pass (False: the rest stays spooled on disk and is delivered later). Records the
        platform refused are in the spool's `rejected/` folder, with a warning. Batches another process
        sharing the spool folder is sending at that moment are that process's to finish."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._retry_at = 0.0  # try the platform now rather than after the backoff
        while self._queue or self._busy or self.spool.pending():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._hurry.set()
            with self._wake:
                self._wake.notify()
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """At exit: stop the thread (a batch it is writing gets finished), then whatever is still in memory
        goes to the spool, for this or a later process to send."""
        self._closing = True
        with self._wake:
            self._wake.notify()
        self._hurry.set()
        self._thread.join(timeout=2.0)
        self._write_batch(drain_all=True)

    _busy = False  # between taking records off the queue and having them on disk or delivered
    _closing = False

    def _run(self) -> None:
        while not self._closing:
            with self._wake:
                if not self._queue:
                    self._wake.wait(timeout=self._idle_wait())
            if self._queue and len(self._queue) < self.batch_size:
                self._hurry.wait(self.linger)  # let a batch gather (fewer, larger requests to the platform)
            self._hurry.clear()
            self._busy = True
            try:
                self._write_batch()
                self._deliver()
            except Exception as exc:  # never let the thread die; the spool keeps what it has
                self._warn("loop", f"tuneforge capture: {type(exc).__name__}: {exc}")
                time.sleep(0.5)
            finally:
                self._busy = False

    def _idle_wait(self) -> float:
        if self.spool.pending():
            return max(0.01, self._retry_at - time.monotonic())
        return 1.0

    def _write_batch(self, drain_all: bool = False) -> None:
        while self._queue:
            records: list[str] = []
            size = 0
            while self._queue and len(records) < self.batch_size and size < MAX_BATCH_BYTES:
                item = self._queue.popleft()
                try:
                    built = item() if callable(item) else item
                    line = built if isinstance(built, str) else json.dumps(built, separators=(",", ":"))
                except Exception as exc:
                    self._warn("build", f"tuneforge capture: could not record a call ({exc}); skipped")
                    continue
                records.append(line)
                size += len(line)
            if records:
                try:
                    self.spool.write(records)
                except OSError:  # disk full, folder gone: keep them in memory and try again later
                    self._queue.extendleft(reversed(records))
                    raise
            if not drain_all:
                return

    def _deliver(self) -> None:
        while time.monotonic() >= self._retry_at:
            files = self.spool.pending()
            if not files:
                return
            claim = self.spool.claim(files[0])
            if claim is None:
                continue
            path, records = claim
            outcome = self._send(records)
            if outcome == "ok":
                self.spool.done(path)
                self._backoff, self._server_errors = 0.0, 0
            elif outcome == "split" and len(records) > 1:
                half = len(records) // 2
                self.spool.write([r.decode() for r in records[:half]], before=path)
                self.spool.write([r.decode() for r in records[half:]], before=path)
                self.spool.done(path)
            elif outcome == "split" or self._server_errors >= MAX_SERVER_ERRORS:
                self._server_errors = 0
                self._warn("rejected", f"tuneforge capture: the platform refused a batch; kept in "
                                       f"{self.spool.reject(path)}")
            else:
                self.spool.release(path)
                self._backoff = min(self.max_backoff, max(0.25, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                return

    def _send(self, lines: list[bytes]) -> str:
        body = b'{"logs":[' + b",".join(lines) + b"]}"  # the spooled JSON as it is: no parse, no re-encode
        try:
            r = self._http.post(self.url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            self._warn("down", f"tuneforge capture: platform at {self.url} unreachable ({type(exc).__name__}); "
                               "spooling calls to disk until it is back")
            return "retry"
        if r.status_code < 300:
            self._warned.discard("down")
            return "ok"
        if r.status_code in SPLITTABLE:
            return "split"
        self._server_errors += r.status_code == 500
        if r.status_code in (401, 403, 404):  # kept and retried: the key or URL may be fixed later
            self._warn("auth", f"tuneforge capture: {self.url} answered {r.status_code} ({r.text[:200]}); check "
                               "TUNEFORGE_BASE_URL / TUNEFORGE_API_KEY. Calls stay spooled until it accepts them")
        return "retry"

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message)


_reporters: dict[tuple[str, str, str], Reporter] = {}
_lock = threading.Lock()


def shared(base_url: str, api_key: str, spool_dir: str | Path | None = None) -> Reporter:
    key = (logs_url(base_url), api_key, str(spool_dir or ""))
    with _lock:
        if key not in _reporters:
            _reporters[key] = Reporter(base_url, api_key, Path(spool_dir) if spool_dir else None)
        return _reporters[key]
