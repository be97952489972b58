"""The daily digest's rules (the plan's "Digest Rule Engine (Not AI)"): from a day's KPI facts, the
deltas, the headline, the one anomaly worth a word, the recommended action and the order KPIs lead
in. Pure rules over plain data; SQL gathers the facts (runhub.generate_digest) and the renderer
writes the sentences from the keys and params returned here, in the owner's language.
"""
from __future__ import annotations

import json
from decimal import Decimal

from ._export import sql_function

_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per json.dumps call
METRICS = ("revenue", "leads", "conversion")  # also the tie order for the headline
ANOMALY_DROP = Decimal(50)  # a metric down more than this % against the same weekday a week before
ANOMALY_DROP_HIGH = Decimal(75)
FAILURES_MIN, FAILURES_SHARE, FAILURES_SHARE_HIGH = 3, Decimal(20), Decimal(50)
RECOMMENDATION_KEYS = {"recover_abandoned": "digest.recommend.recoverAbandoned",
                       "onboard_users": "digest.recommend.onboardUsers",
                       "send_promo": "digest.recommend.sendPromo"}

# Which KPI leads, by industry tag (a project's `industry`): people-first businesses live on leads,
# shops on revenue. A tag matches its own entry, else the entry its first word names, else default.
INDUSTRY_KPI_ORDER = {
    "default": ("revenue", "leads", "conversion"),
    "retail": ("revenue", "conversion", "leads"), "shop": ("revenue", "conversion", "leads"),
    "ecommerce": ("revenue", "conversion", "leads"), "coffee": ("revenue", "conversion", "leads"),
    "food": ("revenue", "conversion", "leads"), "fashion": ("revenue", "conversion", "leads"),
    "services": ("leads", "conversion", "revenue"), "agency": ("leads", "conversion", "revenue"),
    "consulting": ("leads", "conversion", "revenue"), "coaching": ("leads", "conversion", "revenue"),
    "education": ("leads", "conversion", "revenue"), "health": ("leads", "conversion", "revenue"),
    "saas": ("revenue", "leads", "conversion"), "software": ("revenue", "leads", "conversion"),
}


def _number(value) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if type(value) is int:  # JSON counts and cents: exact without a detour through str
        return Decimal(value)
    return Decimal(str(value or 0))


def _json_number(value: Decimal):
    """A Decimal as JSON: an int when whole, else a float (values are rounded by _rounded first)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _rounded(value: Decimal) -> Decimal:
    """Six decimal places: a ratio like 1/6 is stored as the digest shows it, and the delta is the
    difference of what is shown."""
    return round(value, 6)


def conversion(payments, checkouts) -> Decimal | None:
    """Payments per checkout as a ratio (0.25 is 25 %); None without checkouts: a day with no
    checkout has no conversion rate, not a rate of zero."""
    checkouts = _number(checkouts)
    return _number(payments) / checkouts if checkouts else None


def day_values(day: dict) -> dict[str, Decimal | None]:
    rate = conversion(day.get("payments"), day.get("checkouts"))
    return {"revenue": _number(day.get("revenueCents")), "leads": _number(day.get("leads")),
            "conversion": None if rate is None else _rounded(rate)}


def percent_change(value: Decimal, previous: Decimal) -> Decimal | None:
    """Percent change from previous (None where previous is 0: no percent of nothing)."""
    return (value - previous) * 100 / previous if previous else None


def _kpi(now: Decimal | None, before: Decimal | None) -> dict:
    """A KPI's value, the day before's, and the change (none where either day has no value)."""
    defined = now is not None and before is not None
    percent = percent_change(now, before) if defined else None
    return {"value": None if now is None else _json_number(now), "previous": None if before is None else _json_number(before),
            "delta": _json_number(now - before) if defined else None,
            "deltaPercent": None if percent is None else _json_number(_rounded(percent))}


def kpis(day: dict, previous: dict) -> dict:
    """Revenue and leads change in percent; the conversion rate in points too (a rate's change is
    a difference of rates: 25 % to 30 % is +5 points, not +20 %)."""
    now, before = day_values(day), day_values(previous)
    out = {m: _kpi(now[m], before[m]) for m in METRICS}
    rate = out["conversion"]
    rate["deltaPoints"] = None if rate["delta"] is None else _json_number(_rounded(Decimal(str(rate["delta"])) * 100))
    out["revenue"]["otherCurrencyPayments"] = int(_number(day.get("otherCurrencyPayments")))
    return out


def headline(kpi: dict) -> dict:
    """The metric with the largest absolute percent change (ties: revenue, leads, conversion); one up
    from nothing outranks any percent (it has none: the headline gives its value); a steady day when
    none moved."""
    # a metric either day lacks (a conversion rate without checkouts) has no change to headline
    from_zero = [m for m in METRICS if kpi[m]["deltaPercent"] is None and kpi[m]["delta"] is not None and kpi[m]["delta"] > 0]
    if from_zero:
        metric = from_zero[0]
        return {"metric": metric, "delta": kpi[metric]["delta"], "deltaPercent": None,
                "key": f"digest.headline.{metric}FromZero", "params": {"value": kpi[metric]["value"]}}
    moved = [(abs(Decimal(str(kpi[m]["deltaPercent"]))), -i, m) for i, m in enumerate(METRICS)
             if kpi[m]["deltaPercent"] not in (None, 0)]
    if not moved:
        return {"metric": None, "delta": 0, "deltaPercent": None, "key": "digest.headline.noChange", "params": {}}
    _, _, metric = max(moved)
    change = kpi[metric]["deltaPercent"]
    direction = "Up" if change > 0 else "Down"
    params = ({"points": abs(kpi[metric]["deltaPoints"])} if metric == "conversion" else {"percent": abs(change)})
    return {"metric": metric, "delta": kpi[metric]["delta"], "deltaPercent": change,
            "key": f"digest.headline.{metric}{direction}", "params": params}


def anomaly(day: dict, week_before: dict, weekday: int) -> dict | None:
    """The single most severe: a metric down more than 50 % against the same weekday a week before
    (high beyond 75 %), or payment failures (at least 3 and at least 20 % of attempts; high from
    50 %). Ties: the larger percent, then payments, revenue, leads, conversion."""
    found = []
    now, before = day_values(day), day_values(week_before)
    for rank, metric in enumerate(METRICS, start=1):
        if before[metric] is not None and now[metric] is not None and before[metric] > 0:
            drop = (before[metric] - now[metric]) * 100 / before[metric]
            if drop > ANOMALY_DROP:
                found.append((drop > ANOMALY_DROP_HIGH, drop, -rank, {
                    "type": f"{metric}_drop", "key": f"digest.anomaly.{metric}Drop",
                    "params": {"percent": _json_number(_rounded(drop)), "weekday": weekday},
                    "severity": "high" if drop > ANOMALY_DROP_HIGH else "medium"}))
    failed, paid = _number(day.get("paymentFailures")), _number(day.get("payments"))
    attempts = failed + paid
    if failed >= FAILURES_MIN and failed * 100 >= FAILURES_SHARE * attempts:
        share = failed * 100 / attempts
        found.append((share >= FAILURES_SHARE_HIGH, share, 0, {
            "type": "payment_failures", "key": "digest.anomaly.paymentFailures",
            "params": {"failed": int(failed), "attempts": int(attempts), "percent": _json_number(_rounded(share))},
            "severity": "high" if share >= FAILURES_SHARE_HIGH else "medium"}))
    return max(found, key=lambda f: f[:3])[3] if found else None


def recommended_action(candidates: list[dict]) -> dict | None:
    """The first candidate, in the order the facts list them, that the owner can run now
    (prerequisites held, not in cooldown) and whose audience is not empty; its reason is how many it
    would reach. The order is runhub._constants()' recommendationOrder (money now, then people
    waiting): the SQL that gathers the candidates lists them so (tests/sql/47_digests.sql)."""
    for c in candidates:
        if c.get("available") and _number(c.get("reach")) > 0 and c["id"] in RECOMMENDATION_KEYS:
            return {"id": c["id"], "key": RECOMMENDATION_KEYS[c["id"]], "params": {"count": int(_number(c["reach"]))}}
    return None


def kpi_order(industry: str | None) -> list[str]:
    tag = (industry or "").lower()
    order = INDUSTRY_KPI_ORDER.get(tag) or INDUSTRY_KPI_ORDER.get(tag.replace("_", "-").split("-")[0])
    return list(order or INDUSTRY_KPI_ORDER["default"])


def compose(facts: dict) -> dict | None:
    """The DigestContent for facts {project{...}, date, weekday, day, previous, weekBefore,
    candidates, lastOutcome}; None when the day had no activity."""
    day = facts["day"]
    if not _number(day.get("events")):
        return None
    project = facts["project"]
    kpi = kpis(day, facts["previous"])
    return {
        "projectId": project["id"], "projectName": project["name"], "date": facts["date"],
        "timezone": project["timezone"], "currency": project["currency"], "locale": project["locale"],
        "industryTag": project.get("industry"), "kpiOrder": kpi_order(project.get("industry")),
        "kpis": kpi, "headline": headline(kpi),
        "anomaly": anomaly(day, facts["weekBefore"], int(facts["weekday"])),
        "recommendedAction": recommended_action(facts.get("candidates") or []),
        "lastOutcome": facts.get("lastOutcome"),
    }


@sql_function("runhub._compose_digest(p_facts jsonb) RETURNS jsonb")
def compose_digest(p_facts: dict) -> dict | None:
    return compose(p_facts)


@sql_function("runhub._compose_digest_batch(p_facts text) RETURNS SETOF text")
def compose_digest_batch(p_facts: str) -> list[str]:
    """compose over a batch: a JSON list of facts in, each one's DigestContent (or null) out as JSON
    text, in the same order — one call into Python for the digest job's batch, not one per project.
    Text, not jsonb: the json module reads and writes it several times faster than the jsonb
    transform converts every number to and from a Decimal."""
    return [_ENCODE(compose(facts)) for facts in json.loads(p_facts)]
