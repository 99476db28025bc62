"""The eval statistics on synthetic outcomes whose truth is known.

Must show: Bradley-Terry recovers the true order of known strengths, and the bootstrap 95% intervals cover
the true value at about the nominal rate over repeated seeded draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from tuneforge.evals import stats

TRUE_RATINGS = {"d": 880.0, "c": 960.0, "b": 1030.0, "a": 1130.0}  # mean 1000, the fit's own centring


def draw_battles(rng: np.random.Generator, n: int, ratings: dict[str, float] = TRUE_RATINGS,
                 tie_share: float = 0.0) -> list[tuple]:
    """n battles between random pairs, outcomes drawn from the Bradley-Terry model of `ratings`; with
    probability tie_share an outcome is replaced by a tie (which pulls every expected score towards a half,
    so the order survives but the fitted scale shrinks)."""
    names = list(ratings)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), size=2, replace=False)
        a, b = names[i], names[j]
        p = 1 / (1 + 10 ** ((ratings[b] - ratings[a]) / 400))
        outcome = 0.5 if rng.random() < tie_share else float(rng.random() < p)
        out.append((a, b, outcome))
    return out


def test_bradley_terry_recovers_the_true_order_and_scale():
    fitted = stats.bradley_terry(draw_battles(np.random.default_rng(7), 6000), list(TRUE_RATINGS))
    assert sorted(fitted, key=fitted.get) == ["d", "c", "b", "a"]
    for name, rating in TRUE_RATINGS.items():
        assert fitted[name] == pytest.approx(rating, abs=25)
    assert np.mean(list(fitted.values())) == pytest.approx(1000)
    with_ties = stats.bradley_terry(draw_battles(np.random.default_rng(8), 6000, tie_share=0.3))
    assert sorted(with_ties, key=with_ties.get) == ["d", "c", "b", "a"]


def test_bradley_terry_ci_is_ordered_best_first_and_brackets_the_fit():
    ranked = stats.bradley_terry_ci(draw_battles(np.random.default_rng(3), 3000), n_boot=300, seed=1)
    assert [r["name"] for r in ranked] == ["a", "b", "c", "d"]
    assert all(r["ci_low"] < r["rating"] < r["ci_high"] for r in ranked)
    assert ranked == stats.bradley_terry_ci(draw_battles(np.random.default_rng(3), 3000), n_boot=300, seed=1)


def test_bradley_terry_intervals_cover_the_true_ratings_at_about_95_percent():
    rng = np.random.default_rng(11)
    hits = total = 0
    for draw in range(100):
        ranked = stats.bradley_terry_ci(draw_battles(rng, 600), list(TRUE_RATINGS), n_boot=200, seed=draw)
        for r in ranked:
            hits += r["ci_low"] <= TRUE_RATINGS[r["name"]] <= r["ci_high"]
            total += 1
    assert 0.88 <= hits / total <= 0.99


def test_a_model_that_never_loses_gets_a_finite_rating():
    ratings = stats.bradley_terry([("a", "b", 1.0)] * 20 + [("b", "c", 0.5)] * 10)
    assert all(np.isfinite(list(ratings.values())))
    assert ratings["a"] > ratings["b"] + 400 and ratings["b"] == pytest.approx(ratings["c"], abs=5)


def test_ties_count_half_to_each():
    ratings = stats.bradley_terry([("a", "b", 0.5)] * 10 + [("a", "b", 1.0), ("a", "b", 0.0)])
    assert ratings["a"] == pytest.approx(ratings["b"]) == pytest.approx(1000)


def test_each_dataset_weighs_the_same_in_the_ratings():
    big = [("a", "b", 1.0, "big")] * 810 + [("a", "b", 0.0, "big")] * 90
    small = [("a", "b", 1.0, "small")] * 10 + [("a", "b", 0.0, "small")] * 90
    balanced = stats.bradley_terry(big + small)
    assert balanced["a"] == pytest.approx(balanced["b"], abs=1e-6)
    pooled = stats.bradley_terry([t[:3] for t in big + small])  # one dataset: a wins 820 of 1000
    assert pooled["a"] - pooled["b"] == pytest.approx(400 * np.log10(820 / 180), abs=0.5)


def test_mean_ci_covers_the_true_mean_at_about_95_percent():
    rng = np.random.default_rng(2024)
    hits = 0
    for draw in range(200):
        scores = (rng.random(120) < 0.7).astype(float).tolist()
        ci = stats.mean_ci(scores, n_boot=1000, seed=draw)
        hits += ci["ci_low"] <= 0.7 <= ci["ci_high"]
    assert 0.90 <= hits / 200 <= 0.99


def test_paired_win_rate_covers_the_true_win_rate_at_about_95_percent():
    rng = np.random.default_rng(99)
    true_rate = 0.45 * 1 + 0.2 * 0.5  # P(win) 0.45, P(tie) 0.2, P(loss) 0.35
    hits = 0
    for draw in range(200):
        outcomes = rng.choice([1.0, 0.5, 0.0], size=150, p=[0.45, 0.2, 0.35]).tolist()
        wr = stats.paired_win_rate(outcomes, n_boot=1000, seed=draw)
        hits += wr["ci_low"] <= true_rate <= wr["ci_high"]
    assert 0.90 <= hits / 200 <= 0.99


def test_mean_ci_basics():
    assert stats.mean_ci([1.0, None, 0.0, 1.0, 1.0], n_boot=200) == pytest.approx(
        stats.mean_ci([1.0, 0.0, 1.0, 1.0], n_boot=200))
    constant = stats.mean_ci([0.5] * 30)
    assert (constant["mean"], constant["ci_low"], constant["ci_high"], constant["n"]) == (0.5, 0.5, 0.5, 30)
    assert stats.mean_ci([]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert stats.mean_ci([0.25]) == {"mean": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 1}
    ci = stats.mean_ci([0, 1] * 50, seed=5)
    assert ci["ci_low"] < 0.5 < ci["ci_high"] and ci == stats.mean_ci([0, 1] * 50, seed=5)


def test_paired_win_rate_and_outcomes_from_scores():
    outcomes = stats.outcomes_from_scores([1, 0.5, None, 0, 1], [0, 0.5, 1, 1, 1])
    assert outcomes == [1.0, 0.5, 0.0, 0.5]
    wr = stats.paired_win_rate(outcomes, n_boot=100)
    assert (wr["wins"], wr["ties"], wr["losses"], wr["n"]) == (1, 2, 1, 4)
    assert wr["win_rate"] == 0.5
    with pytest.raises(ValueError, match="outcomes"):
        stats.paired_win_rate([0.7])


def test_paired_delta_is_b_minus_a_over_shared_rows():
    d = stats.paired_delta([1, 1, 0, None], [0, 1, 0, 1], n_boot=100)
    assert d["delta"] == pytest.approx(-1 / 3) and d["n"] == 3
    assert d["mean_a"] == pytest.approx(2 / 3) and d["mean_b"] == pytest.approx(1 / 3)
    assert d["ci_low"] <= d["delta"] <= d["ci_high"]
