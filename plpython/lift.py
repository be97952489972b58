"""What a workflow's mail caused: the difference between the recipients it mailed and the ones it
held out, with 95 % intervals. Standard library only (PL/Python runs the server's python3).

Conversions: the difference of two rates with Newcombe's hybrid Wilson score interval (Newcombe
1998, method 10), which keeps its coverage near 95 % for small groups and rates near 0, where the
textbook Wald interval falls apart.

Revenue per recipient is the conversion rate times the mean payment, and mostly zeros: Welch's t
interval on it covered only 90-93 % in simulations with ten payments in the held-out group (the
small group's skew). So each group's revenue per recipient gets a MOVER interval (Zou and Donner
2008) of that product on the log scale — the rate's Wilson interval with a delta-method t interval
of the log mean payment — and the difference another MOVER step, as Newcombe's for the rates. It
needs only each group's recipients, converters, sum and sum of squares of payments, so runs,
actions and shops add up exactly (a bootstrap would need every recipient's amount in every pooled
figure). Its coverage stays within a few points of 95 % for uniform and log-normal (sigma 1)
payments (tests/unit/test_lift.py); with heavier tails (log-normal sigma 1.5: one payment in a
hundred 30 times the median) it falls to 87-93 %, as every interval built on the mean does. Below
the minimum the answer is "not enough data yet", never a number.
"""
from __future__ import annotations

import math

from ._export import sql_function

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
MIN_GROUP = 50  # recipients in each group, and
MIN_CONVERSIONS = 10  # conversions in both groups together, before any figure is given


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z_95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval: (difference, low, high)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return (d, max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function."""
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile for p in (0.5, 1), by bisection (to 1e-12)."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def _mean_amount_log_interval(x: int, total: float, squares: float, pooled: tuple[int, float, float]) -> tuple[float, float, float]:
    """The mean payment of a group's converters, on the log scale: (log mean, low, high), a t
    interval of the delta method (se of log mean = cv / sqrt(x)). A group with fewer than two
    converters borrows the spread of both groups' together."""
    px, ptotal, psquares = pooled
    n_, s_, q_ = (x, total, squares) if x >= 2 else (px, ptotal, psquares)
    mean = (total / x) if x else ptotal / px
    variance = max(q_ - s_ * s_ / n_, 0.0) / (n_ - 1)
    half = t_quantile(0.975, n_ - 1) * math.sqrt(variance) / (s_ / n_) / math.sqrt(max(x, 1))
    log_mean = math.log(mean)
    return log_mean, log_mean - half, log_mean + half


def _revenue_per_recipient(n: int, x: int, total: float, squares: float, pooled) -> tuple[float, float, float]:
    """A group's revenue per recipient (rate x mean payment) with its 95 % interval: MOVER (Zou and
    Donner 2008) on the log scale for the product of the Wilson interval of the rate and the
    interval of the mean payment."""
    low_p, high_p = wilson(x, n)
    log_mu, low_mu, high_mu = _mean_amount_log_interval(x, total, squares, pooled)
    if x == 0:  # no payment: 0, up to the rate's upper bound at the upper mean payment
        return 0.0, 0.0, high_p * math.exp(high_mu)
    log_p = math.log(x / n)
    estimate = total / n
    low = math.exp(log_p + log_mu - math.sqrt((log_p - math.log(low_p)) ** 2 + (log_mu - low_mu) ** 2))
    high = math.exp(log_p + log_mu + math.sqrt((math.log(high_p) - log_p) ** 2 + (high_mu - log_mu) ** 2))
    return estimate, low, high


def revenue_difference(n1: int, x1: int, sum1: float, squares1: float,
                       n2: int, x2: int, sum2: float, squares2: float) -> tuple[float, float, float]:
    """Revenue per recipient of group 1 minus group 2 with its 95 % interval (MOVER, as Newcombe's
    for the rates), from each group's recipients, converters, and the sum and sum of squares of
    their payments."""
    pooled = (x1 + x2, sum1 + sum2, squares1 + squares2)
    r1, l1, u1 = _revenue_per_recipient(n1, x1, sum1, squares1, pooled)
    r2, l2, u2 = _revenue_per_recipient(n2, x2, sum2, squares2, pooled)
    d = r1 - r2
    return d, d - math.sqrt((r1 - l1) ** 2 + (u2 - r2) ** 2), d + math.sqrt((u1 - r1) ** 2 + (r2 - l2) ** 2)


def _group(g: dict) -> dict:
    n = int(g["recipients"])
    return {"recipients": n, "conversions": int(g["conversions"]),
            "conversionRate": (int(g["conversions"]) / n) if n else None,
            "revenueCents": int(g["revenueCents"]), "revenueSquares": int(g["revenueSquares"]),
            "revenuePerRecipientCents": (float(g["revenueCents"]) / n) if n else None}


def lift(mailed: dict, held_out: dict) -> dict:
    """The `incremental` figure of an Outcome from the two groups' totals ({recipients,
    conversions, revenueCents, revenueSquares}: revenueSquares the sum of each recipient's revenue
    squared, in cents²)."""
    result = {"mailed": _group(mailed), "heldOut": _group(held_out), "method":
              {"conversions": "newcombe_hybrid_wilson", "revenue": "mover_wilson_lognormal_mean", "confidence": 0.95,
               "matching": "cart_or_amount"}}
    n1, n2 = int(mailed["recipients"]), int(held_out["recipients"])
    x1, x2 = int(mailed["conversions"]), int(held_out["conversions"])
    if min(n1, n2) < MIN_GROUP or x1 + x2 < MIN_CONVERSIONS:
        result.update(enoughData=False, minimum={"recipientsPerGroup": MIN_GROUP, "conversions": MIN_CONVERSIONS})
        return result
    d, low, high = newcombe(x1, n1, x2, n2)
    r, r_low, r_high = revenue_difference(n1, x1, float(mailed["revenueCents"]), float(mailed["revenueSquares"]),
                                          n2, x2, float(held_out["revenueCents"]), float(held_out["revenueSquares"]))
    result.update(enoughData=True,
                  conversionLift={"difference": d, "low": low, "high": high, "significant": low > 0 or high < 0},
                  revenueLiftPerRecipientCents={"difference": r, "low": r_low, "high": r_high,
                                                "significant": r_low > 0 or r_high < 0},
                  incrementalRevenueCents=round(r * n1))
    result["significant"] = result["revenueLiftPerRecipientCents"]["significant"]
    return result


@sql_function("runhub._lift(p_mailed jsonb, p_held_out jsonb) RETURNS jsonb")
def sql_lift(p_mailed: dict, p_held_out: dict) -> dict:
    return lift(p_mailed, p_held_out)
