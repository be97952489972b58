"""plpython/lift.py: the intervals of a holdout comparison, checked against published values and by
seeded simulation — their coverage close to 95 %, within a tolerance computed from the number of
simulations (4 binomial standard deviations)."""
from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plpython import lift as L

SIMULATIONS = 1000
TOLERANCE = 4 * math.sqrt(0.95 * 0.05 / SIMULATIONS)  # ~0.028: a 1-in-15,000 chance of a false alarm


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (5, 2.5705818), (30, 2.0422725), (1000, 1.9623391)])
def test_t_quantiles_match_the_tables(df, expected):
    assert L.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_newcombe_matches_his_worked_example():
    """Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 - 48/80 = 0.2000 (0.0524, 0.3339)."""
    d, low, high = L.newcombe(56, 70, 48, 80)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)


def test_wilson_matches_the_textbook():
    low, high = L.wilson(81, 263)  # Wilson score interval of 81/263: (0.2553, 0.3662)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.data())
def test_intervals_contain_their_estimate(n1, n2, data):
    x1, x2 = data.draw(st.integers(0, n1)), data.draw(st.integers(0, n2))
    d, low, high = L.newcombe(x1, n1, x2, n2)
    assert -1 <= low <= d <= high <= 1
    amounts = data.draw(st.lists(st.integers(1, 10**7), min_size=x1 + x2, max_size=x1 + x2)) if x1 + x2 <= 50 else \
        [5000] * (x1 + x2)
    if x1 + x2 >= 2:
        a1, a2 = amounts[:x1], amounts[x1:]
        r, r_low, r_high = L.revenue_difference(n1, x1, sum(a1), sum(a * a for a in a1),
                                                n2, x2, sum(a2), sum(a * a for a in a2))
        assert r_low <= r + 1e-6 and r - 1e-6 <= r_high


def _simulate(p_mailed, p_held, n_mailed, n_held, seed, amount):
    rng = random.Random(seed)

    def group(p, n):
        x = total = squares = 0
        for _ in range(n):
            if rng.random() < p:
                a = amount(rng)
                x, total, squares = x + 1, total + a, squares + a * a
        return {"recipients": n, "conversions": x, "revenueCents": total, "revenueSquares": squares}

    return group(p_mailed, n_mailed), group(p_held, n_held)


def _coverage(p_mailed, p_held, n_mailed, n_held, amount, mean_amount):
    covered_conversions = covered_revenue = judged = 0
    for seed in range(SIMULATIONS):
        mailed, held = _simulate(p_mailed, p_held, n_mailed, n_held, seed, amount)
        result = L.lift(mailed, held)
        if not result["enoughData"]:
            continue
        judged += 1
        c, r = result["conversionLift"], result["revenueLiftPerRecipientCents"]
        covered_conversions += c["low"] <= p_mailed - p_held <= c["high"]
        covered_revenue += r["low"] <= (p_mailed - p_held) * mean_amount <= r["high"]
    assert judged >= SIMULATIONS * 0.9
    return covered_conversions / judged, covered_revenue / judged


UNIFORM = (lambda rng: rng.randint(1000, 9000), 5000)
LOGNORMAL = (lambda rng: round(math.exp(rng.gauss(8, 1.0))), math.exp(8.5))  # baskets 10x apart are common


@pytest.mark.slow
@pytest.mark.parametrize("amount, mean", [UNIFORM, LOGNORMAL], ids=["uniform", "lognormal"])
@pytest.mark.parametrize("p_mailed, p_held, n_mailed, n_held", [
    (0.05, 0.05, 900, 100),    # no effect: the interval covers 0
    (0.10, 0.05, 900, 100),    # a known effect: recovered (covered) as often
    (0.05, 0.05, 3600, 400),
    (0.20, 0.12, 450, 50),
])
def test_intervals_cover_the_true_lift_about_95_percent_of_the_time(p_mailed, p_held, n_mailed, n_held, amount, mean):
    conversions, revenue = _coverage(p_mailed, p_held, n_mailed, n_held, amount, mean)
    assert abs(conversions - 0.95) <= TOLERANCE, conversions
    assert abs(revenue - 0.95) <= TOLERANCE, revenue


def test_a_real_effect_is_significant_and_no_effect_rarely_is():
    mailed, held = _simulate(0.12, 0.04, 4000, 1000, 1, UNIFORM[0])
    result = L.lift(mailed, held)
    assert result["significant"] and result["conversionLift"]["low"] > 0
    assert result["incrementalRevenueCents"] == round(result["revenueLiftPerRecipientCents"]["difference"] * 4000)
    false_alarms = sum(L.lift(*_simulate(0.05, 0.05, 900, 100, seed, UNIFORM[0]))["significant"] for seed in range(400))
    assert false_alarms / 400 <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / 400)


def test_below_the_minimum_it_says_not_enough_data_instead_of_a_number():
    result = L.lift({"recipients": 40, "conversions": 5, "revenueCents": 20000, "revenueSquares": 10**8},
                    {"recipients": 400, "conversions": 20, "revenueCents": 80000, "revenueSquares": 4 * 10**8})
    assert result["enoughData"] is False and "conversionLift" not in result
    assert result["minimum"] == {"recipientsPerGroup": L.MIN_GROUP, "conversions": L.MIN_CONVERSIONS}
    few = L.lift({"recipients": 500, "conversions": 4, "revenueCents": 1, "revenueSquares": 1},
                 {"recipients": 60, "conversions": 0, "revenueCents": 0, "revenueSquares": 0})
    assert few["enoughData"] is False


def test_pooled_groups_add_up():
    """Runs add their groups' counts, sums and squares: the pooled figure is the one of the union."""
    runs = [_simulate(0.08, 0.05, 300, 40, seed, UNIFORM[0]) for seed in range(6)]
    pooled = [{k: sum(run[i][k] for run in runs) for k in runs[0][i]} for i in (0, 1)]
    assert L.lift(*pooled)["mailed"]["recipients"] == 1800 and L.lift(*pooled)["heldOut"]["recipients"] == 240
