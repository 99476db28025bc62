"""How many compute threads a small decode step gets: one, or all, whichever the engine's first steps ran faster.

A step of a few rows is ~120 small matrix calls and ~25 small tensor ops per layer. Whether two threads help
depends on the process, not only on the machine: libgomp (torch's OpenMP) keeps a team of worker threads per
thread that has run parallel work, and once a process has more of them than cores it stops spinning between
parallel regions, so every region pays a wake-up. In `serve`, where only the engine's thread runs parallel
work, a single stream decoded 64-68 tokens/s on two threads against 50-52 on one; where another thread had
run parallel work first (tests, a worker that trained in-process), two threads were twice as slow as one.
So the engine measures: its first single-row steps alternate between one thread and all of them, and the
faster median wins for every small step after. Until then, and for steps of a few rows, one thread (never
much worse).
"""

from __future__ import annotations

import statistics

TRIALS = 5  # single-row steps timed per option


class SmallStepThreads:
    def __init__(self, threads: int):
        self.options = sorted({1, threads})
        self.trials: dict[int, list[float]] = {n: [] for n in self.options}
        self.choice: int | None = self.options[0] if len(self.options) == 1 else None

    def for_trial(self) -> int:
        """The thread count for the next single-row step (the chosen one once measured)."""
        if self.choice is not None:
            return self.choice
        return min(self.options, key=lambda n: len(self.trials[n]))  # the one measured least so far

    def for_small(self) -> int:
        """The thread count for other small work (a few rows): one thread until measured."""
        return self.choice if self.choice is not None else 1

    def record(self, threads: int, seconds: float) -> None:
        if self.choice is not None:
            return
        self.trials[threads].append(seconds)
        if all(len(t) >= TRIALS for t in self.trials.values()):
            self.choice = min(self.options, key=lambda n: statistics.median(self.trials[n]))
