"""Per-project request rates and spend for the logging proxy, kept by this server process.

The rate is a token bucket per project, in memory: a project may make `per_minute` calls in a burst, then one
every 60 / `per_minute` seconds. Behind a load balancer with N server processes a project gets up to N times
the rate, and a restart refills every bucket.

The spend is what the logs said at the last read (`store/spend.py`, read at most every `refresh_s` seconds, in
a thread), plus what the calls this process finished since that read began cost. So a burst is counted as its
calls finish, not once their logs are written, and reading the day's logs (a sum over all of them) stays rare.
Other server processes' calls show once the next read sees their logs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from tuneforge.store.spend import day_start


class RateLimiter:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # project -> (tokens, when counted)

    def take(self, project_id: str, per_minute: int) -> int:
        """Spend one call of the project's budget: 0 when it may go now, else the whole seconds to wait."""
        if per_minute <= 0:
            return 60
        now, rate = self.clock(), per_minute / 60.0
        tokens, then = self._buckets.get(project_id, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - then) * rate)
        if tokens >= 1.0:
            self._buckets[project_id] = (tokens - 1.0, now)
            return 0
        self._buckets[project_id] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rate))


@dataclass
class _Spend:
    day: float  # the UTC day counted
    logged: float = 0.0  # USD the logs held at the last read
    since: float = 0.0  # USD of this process's calls finished since that read began
    next_read: float = 0.0  # monotonic time of the next read


class SpendMeter:
    def __init__(self, read: Callable[[str], float], refresh_s: float = 10.0):
        self.read, self.refresh_s = read, refresh_s  # read(project_id): USD the logs hold for today
        self._projects: dict[str, _Spend] = {}

    async def spent(self, project_id: str) -> float:
        """The project's USD today on the operator's keys."""
        entry = self._entry(project_id)
        if time.monotonic() >= entry.next_read:
            entry.next_read = time.monotonic() + self.refresh_s  # meanwhile, other calls use what is known
            before = entry.since
            try:
                logged = await anyio.to_thread.run_sync(self.read, project_id)  # the database: not on the event loop
            except BaseException:
                entry.next_read = 0.0
                raise
            if entry is self._projects.get(project_id):  # still the same day
                entry.logged, entry.since = logged, entry.since - before
        return entry.logged + entry.since

    def add(self, project_id: str, usd: float) -> None:
        """A call of this process on the operator's key finished and cost `usd`."""
        if usd:
            self._entry(project_id).since += usd

    def _entry(self, project_id: str) -> _Spend:
        day = day_start()
        entry = self._projects.get(project_id)
        if entry is None or entry.day != day:
            entry = self._projects[project_id] = _Spend(day)
        return entry
