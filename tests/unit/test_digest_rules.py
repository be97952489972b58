"""plpython/digest.py as plain Python: the digest's rules over plain facts (no database)."""
from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from plpython.digest import anomaly, compose, headline, kpi_order, kpis, recommended_action
from runhub_loader.constants import CONSTANTS


def day(revenue=0, leads=0, payments=0, checkouts=0, failures=0, events=1, other=0):
    return {"events": events, "revenueCents": revenue, "leads": leads, "payments": payments,
            "checkouts": checkouts, "paymentFailures": failures, "otherCurrencyPayments": other}


def test_deltas_and_a_percent_only_of_something():
    k = kpis(day(revenue=1500, leads=2, payments=1, checkouts=4), day(revenue=0, leads=4, payments=1, checkouts=2))
    assert k["revenue"] == {"value": 1500, "previous": 0, "delta": 1500, "deltaPercent": None, "otherCurrencyPayments": 0}
    assert k["leads"] == {"value": 2, "previous": 4, "delta": -2, "deltaPercent": -50}
    assert k["conversion"] == {"value": 0.25, "previous": 0.5, "delta": -0.25, "deltaPercent": -50, "deltaPoints": -25}


def test_the_headline_is_the_largest_percent_change_with_ties_in_metric_order():
    k = kpis(day(revenue=150, leads=1, payments=1, checkouts=2), day(revenue=100, leads=2, payments=1, checkouts=1))
    # revenue +50 %, leads -50 %, conversion -50 %: a tie, revenue first
    assert headline(k) == {"metric": "revenue", "delta": 50, "deltaPercent": 50, "key": "digest.headline.revenueUp",
                           "params": {"percent": 50}}
    k = kpis(day(leads=1), day(leads=4))
    assert headline(k)["key"] == "digest.headline.leadsDown" and headline(k)["params"] == {"percent": 75}


def test_a_steady_day():
    assert headline(kpis(day(revenue=100), day(revenue=100)))["key"] == "digest.headline.noChange"
    assert headline(kpis(day(revenue=100, leads=3), day(revenue=0, leads=1))) == {  # no percent of nothing
        "metric": "revenue", "delta": 100, "deltaPercent": None, "key": "digest.headline.revenueFromZero",
        "params": {"value": 100}}


def test_anomalies_pick_the_most_severe():
    assert anomaly(day(leads=2), day(leads=4), 3) is None  # exactly 50 %: not more than half
    assert anomaly(day(leads=1), day(leads=4), 3)["severity"] == "medium"  # 75 %: not more than 75
    assert anomaly(day(leads=0), day(leads=4), 3) == {"type": "leads_drop", "key": "digest.anomaly.leadsDrop",
                                                      "params": {"percent": 100, "weekday": 3}, "severity": "high"}
    assert anomaly(day(failures=2, payments=0), day(), 1) is None  # fewer than 3
    assert anomaly(day(failures=3, payments=20), day(), 1) is None  # 3 of 23: under 20 %
    both = anomaly(day(revenue=10, failures=3, payments=9), day(revenue=100), 1)
    assert both["type"] == "revenue_drop" and both["severity"] == "high"  # 90 % beats 25 % failures


def test_the_recommendation_is_the_first_that_can_run_and_reaches_someone():
    candidates = [{"id": "recover_abandoned", "available": True, "reach": 0},
                  {"id": "onboard_users", "available": True, "reach": 3},
                  {"id": "send_promo", "available": False, "reach": None}]
    assert recommended_action(candidates) == {"id": "onboard_users", "key": "digest.recommend.onboardUsers",
                                              "params": {"count": 3}}
    assert recommended_action([{"id": "send_promo", "available": False, "reach": 9}]) is None


def test_the_recommendation_follows_the_order_the_facts_give():
    every = [{"id": a, "available": True, "reach": 5} for a in CONSTANTS["recommendationOrder"]]
    assert recommended_action(every)["id"] == CONSTANTS["recommendationOrder"][0]
    assert recommended_action(every[::-1])["id"] == CONSTANTS["recommendationOrder"][-1]  # Python keeps no order of its own


def test_industry_decides_which_kpi_leads():
    assert kpi_order("services") == ["leads", "conversion", "revenue"]
    assert kpi_order("coffee") == ["revenue", "conversion", "leads"]
    assert kpi_order("retail-food") == ["revenue", "conversion", "leads"]
    assert kpi_order(None) == kpi_order("unheard-of") == ["revenue", "leads", "conversion"]


def test_no_activity_no_digest():
    facts = {"project": {"id": "p", "name": "Shop", "timezone": "UTC", "currency": "EUR", "locale": "en"},
             "date": "2026-11-30", "weekday": 1, "day": day(events=0), "previous": day(), "weekBefore": day()}
    assert compose(facts) is None


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({m: st.integers(0, 10_000) for m in ("revenue", "leads", "payments", "checkouts", "failures")}),
       st.fixed_dictionaries({m: st.integers(0, 10_000) for m in ("revenue", "leads", "payments", "checkouts", "failures")}))
def test_any_day_composes_a_consistent_digest(now, before):
    k = kpis(day(**now), day(**before))
    h = headline(k)
    for metric, kpi in k.items():
        if kpi["value"] is None or kpi["previous"] is None:  # a rate without checkouts: no change of it
            assert metric == "conversion" and kpi["delta"] is kpi["deltaPercent"] is kpi["deltaPoints"] is None
            assert h["metric"] != "conversion"
            continue
        assert Decimal(str(kpi["value"])) - Decimal(str(kpi["previous"])) == Decimal(str(kpi["delta"]))
    if h["key"].endswith("FromZero"):
        assert k[h["metric"]]["previous"] == 0 < k[h["metric"]]["value"]
    elif h["metric"]:
        assert abs(h["deltaPercent"]) == max(abs(kpi["deltaPercent"]) for kpi in k.values() if kpi["deltaPercent"])
        assert (h["deltaPercent"] > 0) == h["key"].endswith("Up")
    a = anomaly(day(**now), day(**before), 1)
    assert a is None or a["severity"] in ("medium", "high")


def test_a_day_without_checkouts_has_no_conversion_rate_and_the_next_day_no_change_against_it():
    """Not 0 %: the next day's headline was "conversion up from zero" over a real +100 % revenue day."""
    quiet = kpis(day(revenue=500, payments=1, checkouts=0), day(revenue=250, payments=1, checkouts=2))
    assert quiet["conversion"] == {"value": None, "previous": 0.5, "delta": None, "deltaPercent": None,
                                   "deltaPoints": None}
    after = kpis(day(revenue=1000, payments=1, checkouts=4), day(revenue=500, payments=1, checkouts=0))
    assert after["conversion"]["previous"] is None and after["conversion"]["delta"] is None
    assert headline(after)["key"] == "digest.headline.revenueUp"


def test_a_conversion_headline_speaks_in_points():
    k = kpis(day(revenue=100, payments=3, checkouts=10), day(revenue=100, payments=1, checkouts=10))
    assert headline(k) == {"metric": "conversion", "delta": 0.2, "deltaPercent": 200,
                           "key": "digest.headline.conversionUp", "params": {"points": 20}}
