"""The statistics an eval report stands on: pure numpy functions of per-row outcomes, seeded, no state.

"The student scores 0.81" says little without how sure that is; "it beats the teacher" says nothing without
the interval. Everything here is a percentile bootstrap (resample rows with replacement, recompute, take the
2.5th and 97.5th percentiles):

- `mean_ci`: a model's mean score on one grader.
- `paired_win_rate`: one model against another, row by row (1 win, 0.5 tie, 0 loss), wins + ties / 2 over
  rows, resampled over rows (the rows are the unit: both models answered the same rows).
- `paired_delta`: the mean of b - a over rows (the forgetting check: fine-tune minus base on the suite).
- `bradley_terry` / `bradley_terry_ci`: one rating per model from all the pairwise battles, fitted by maximum
  likelihood (P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)), a tie counting half a win for each, as
  Chatbot Arena does), on the Elo-like scale with the models' mean rating at 1000. A small Gaussian prior on
  the log-strengths (`ridge`, negligible next to a few battles) keeps a model that never lost finite. With
  battles from several datasets, each dataset gets equal total weight, and the bootstrap resamples battles
  within each dataset, refits, and takes the percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCALE = 400 / np.log(10)  # Elo points per unit of natural log-strength
_CHUNK = 2_000_000  # bootstrap indices drawn at a time (memory bound)


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None], dtype=float)


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of x, drawn in chunks."""
    per = max(1, _CHUNK // max(1, len(x)))
    out = []
    for start in range(0, n_boot, per):
        idx = rng.integers(0, len(x), size=(min(per, n_boot - start), len(x)))
        out.append(x[idx].mean(axis=1))
    return np.concatenate(out)


def _interval(x: np.ndarray, n_boot: int, seed: int | None, level: float) -> tuple[float | None, ...]:
    if len(x) == 0:
        return None, None, None
    if len(x) == 1 or n_boot <= 0:
        return float(x.mean()), float(x.mean()), float(x.mean())
    means = _boot_means(x, n_boot, np.random.default_rng(seed))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(x.mean()), float(low), float(high)


def mean_ci(scores: Sequence[float | None], *, n_boot: int = 1000, seed: int | None = 0,
            level: float = 0.95) -> dict:
    """{mean, ci_low, ci_high, n} of the scores (None entries are rows the grader did not grade)."""
    x = _clean(scores)
    mean, low, high = _interval(x, n_boot, seed, level)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(len(x))}


def outcomes_from_scores(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    """Per row, a's outcome against b by score: 1 if higher, 0.5 if equal, 0 if lower; rows either lacks skipped."""
    return [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b) if x is not None and y is not None]


def paired_win_rate(outcomes: Sequence[float], *, n_boot: int = 1000, seed: int | None = 0,
                    level: float = 0.95) -> dict:
    """{wins, ties, losses, win_rate, ci_low, ci_high, n}: a tie counts half; the CI resamples rows."""
    x = _clean(outcomes)
    if np.any((x != 0) & (x != 0.5) & (x != 1)):
        raise ValueError("outcomes must be 1 (win), 0.5 (tie) or 0 (loss)")
    rate, low, high = _interval(x, n_boot, seed, level)
    return {"wins": int(np.sum(x == 1)), "ties": int(np.sum(x == 0.5)), "losses": int(np.sum(x == 0)),
            "win_rate": rate, "ci_low": low, "ci_high": high, "n": int(len(x))}


def paired_delta(a: Sequence[float | None], b: Sequence[float | None], *, n_boot: int = 1000,
                 seed: int | None = 0, level: float = 0.95) -> dict:
    """{delta, ci_low, ci_high, n, mean_a, mean_b}: mean of b - a over the rows both have, CI over rows."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    xa, xb = np.asarray([p[0] for p in pairs], float), np.asarray([p[1] for p in pairs], float)
    delta, low, high = _interval(xb - xa, n_boot, seed, level)
    return {"delta": delta, "ci_low": low, "ci_high": high, "n": len(pairs),
            "mean_a": float(xa.mean()) if pairs else None, "mean_b": float(xb.mean()) if pairs else None}


@dataclass
class Battles:
    """Pairwise outcomes as arrays: model i vs model j, i's score (1 / 0.5 / 0), weight, dataset index."""

    models: list[str]
    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    weight: np.ndarray
    group: np.ndarray

    @classmethod
    def of(cls, battles: Sequence[tuple], models: Sequence[str] | None = None) -> Battles:
        """From (a, b, a's outcome) or (a, b, a's outcome, dataset) tuples; each dataset gets equal weight."""
        names = list(models) if models is not None else sorted({m for t in battles for m in t[:2]})
        index = {m: k for k, m in enumerate(names)}
        groups = [t[3] if len(t) > 3 else "" for t in battles]
        group_ids = {g: k for k, g in enumerate(dict.fromkeys(groups))}
        group = np.asarray([group_ids[g] for g in groups], dtype=int)
        sizes = np.bincount(group, minlength=len(group_ids)) if len(group) else np.zeros(0)
        weight = len(group) / len(group_ids) / sizes[group] if len(group) else np.zeros(0)
        return cls(names, np.asarray([index[t[0]] for t in battles], dtype=int),
                   np.asarray([index[t[1]] for t in battles], dtype=int),
                   np.asarray([t[2] for t in battles], dtype=float), np.asarray(weight, dtype=float), group)


def _counts(b: Battles, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate (rows: [R, n] battle indices): weighted wins W [R, k] and games N [R, k, k]."""
    reps, n = rows.shape
    k = len(b.models)
    rep = np.repeat(np.arange(reps), n)
    i, j, s, w = b.i[rows].ravel(), b.j[rows].ravel(), b.score[rows].ravel(), b.weight[rows].ravel()
    wins = (np.bincount(rep * k + i, weights=w * s, minlength=reps * k)
            + np.bincount(rep * k + j, weights=w * (1 - s), minlength=reps * k)).reshape(reps, k)
    games = np.bincount(rep * k * k + i * k + j, weights=w, minlength=reps * k * k).reshape(reps, k, k)
    return wins, games + games.transpose(0, 2, 1)


def _fit(wins: np.ndarray, games: np.ndarray, ridge: float, max_iter: int = 200) -> np.ndarray:
    """Penalised maximum-likelihood log-strengths [R, k] by Newton's method (steps capped at 1 per model)."""
    reps, k = wins.shape
    theta = np.zeros((reps, k))
    eye = np.eye(k)
    for _ in range(max_iter):
        p = 1 / (1 + np.exp(theta[:, None, :] - theta[:, :, None]))  # p[r, i, j] = P(i beats j)
        grad = wins - (games * p).sum(axis=2) - ridge * theta
        curv = games * p * (1 - p)
        hess = curv - eye * curv.sum(axis=2)[:, :, None] - ridge * eye  # negative definite
        step = np.linalg.solve(hess, -grad[:, :, None])[:, :, 0]
        step = np.clip(step, -1.0, 1.0)
        theta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta


def _ratings(theta: np.ndarray) -> np.ndarray:
    return 1000 + SCALE * (theta - theta.mean(axis=-1, keepdims=True))


def bradley_terry(battles: Battles | Sequence[tuple], models: Sequence[str] | None = None, *,
                  ridge: float = 0.01) -> dict[str, float]:
    """Each model's rating (Elo-like scale, mean 1000) fitted to all the battles."""
    b = battles if isinstance(battles, Battles) else Battles.of(battles, models)
    wins, games = _counts(b, np.arange(len(b.i))[None, :])
    return dict(zip(b.models, _ratings(_fit(wins, games, ridge))[0].tolist()))


def bradley_terry_ci(battles: Battles | Sequence[tuple], models: Sequence[str] | None = None, *,
                     n_boot: int = 1000, seed: int | None = 0, level: float = 0.95,
                     ridge: float = 0.01) -> list[dict]:
    """[{name, rating, ci_low, ci_high}], best first: the fit, and percentiles of refits on battles resampled
    within each dataset."""
    b = battles if isinstance(battles, Battles) else Battles.of(battles, models)
    point = bradley_terry(b, ridge=ridge)
    if len(b.i) == 0:
        return [{"name": m, "rating": point[m], "ci_low": None, "ci_high": None} for m in b.models]
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2 * 100
    boots = []
    per = max(1, min(200, _CHUNK // max(1, len(b.i) * len(b.models))))
    for start in range(0, n_boot, per):
        reps = min(per, n_boot - start)
        parts = [members[rng.integers(0, len(members), size=(reps, len(members)))]
                 for members in (np.flatnonzero(b.group == g) for g in np.unique(b.group))]
        wins, games = _counts(b, np.concatenate(parts, axis=1))
        boots.append(_ratings(_fit(wins, games, ridge)))
    low, high = np.percentile(np.concatenate(boots), [tail, 100 - tail], axis=0)
    out = [{"name": m, "rating": point[m], "ci_low": float(lo), "ci_high": float(hi)}
           for m, lo, hi in zip(b.models, low, high)]
    return sorted(out, key=lambda r: -r["rating"])
