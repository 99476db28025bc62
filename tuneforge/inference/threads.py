"""How many compute threads a small decode step gets: one, or all, whichever has lately run faster.

A step of a few rows is ~120 small matrix calls and ~25 small tensor ops per layer. Whether two threads help
depends on the process, not only on the machine: libgomp (torch's OpenMP) keeps a team of worker threads per
thread that has run parallel work, and once a process has more of them than cores it stops spinning between
parallel regions, so every region pays a wake-up. In `serve`, where only the engine's thread runs parallel
work, a single stream decoded 64-68 tokens/s on two threads against 50-52 on one; where another thread had
run parallel work first (tests, a worker that trained in-process), two threads were twice as slow as one.
It also depends on the moment: the first steps run while the server is still busy with the first request,
and one choice made then, on a few steps, picked one thread in some runs (58 tokens/s against 75-81).

So the engine measures all the time: its first single-row steps alternate between one thread and all of
them; then the faster median of the recent steps wins, and every `EXPLORE`th single-row step runs on the
other option, so a choice that the moment got wrong is corrected (at ~1% of steps on the slower option).
Steps of a few rows follow the choice; until there is one, they take one thread (never much worse).
"""

from __future__ import annotations

import statistics
from collections import deque

TRIALS = 5  # single-row steps timed per option before the first choice
WINDOW = 15  # recent steps per option that the choice looks at
EXPLORE = 64  # one single-row step in this many runs on the option not chosen


class SmallStepThreads:
    def __init__(self, threads: int):
        self.options = sorted({1, threads})
        self.recent: dict[int, deque[float]] = {n: deque(maxlen=WINDOW) for n in self.options}
        self.choice: int | None = self.options[0] if len(self.options) == 1 else None
        self.steps = 0

    def for_trial(self) -> int:
        """The thread count for the next single-row step (timed, then `record`ed)."""
        if len(self.options) == 1:
            return self.options[0]
        if self.choice is None:
            return min(self.options, key=lambda n: len(self.recent[n]))  # the one measured least so far
        self.steps += 1
        if self.steps % EXPLORE == 0:
            return next(n for n in self.options if n != self.choice)
        return self.choice

    def for_small(self) -> int:
        """The thread count for other small work (a few rows): one thread until measured."""
        return self.choice if self.choice is not None else 1

    def record(self, threads: int, seconds: float) -> None:
        if len(self.options) == 1:
            return
        self.recent[threads].append(seconds)
        if all(len(t) >= TRIALS for t in self.recent.values()):
            self.choice = min(self.options, key=lambda n: statistics.median(self.recent[n]))

    def summary(self) -> str:
        return ", ".join(f"{n}: {1000 * statistics.median(t):.1f} ms" for n, t in self.recent.items() if t)
