"""plpython/policy.py as plain Python: the rule order and each rule's edges, no server."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plpython.policy import evaluate

POLICY = {"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "previewMaxAgeMinutes": 15,
          "warnAtRecipients": 500}
NOW = "2026-11-26T12:00:00.000000Z"


def facts(**overrides) -> dict:
    base = {"policy": POLICY, "role": "owner", "requiredRole": "owner", "requirements": [],
            "lastRunAt": None, "now": NOW, "recipientCount": 10}
    return {**base, **overrides}


def test_allowed_with_no_warnings():
    assert evaluate(facts()) == {"allowed": True, "warnings": []}


@pytest.mark.parametrize("role, required, reason", [
    ("member", "owner", "workflows.policy.ownerRequired"),
    ("admin", "owner", "workflows.policy.ownerRequired"),
    ("member", "admin", "auth.roleRequired"),
    (None, "member", "workflows.policy.actorNotMember"),
])
def test_roles_below_the_action_are_refused(role, required, reason):
    decision = evaluate(facts(role=role, requiredRole=required))
    assert (decision["allowed"], decision["reason"]) == (False, reason)


@pytest.mark.parametrize("role, required", [("owner", "admin"), ("admin", "admin"), ("member", "member")])
def test_roles_at_or_above_pass(role, required):
    assert evaluate(facts(role=role, requiredRole=required))["allowed"]


def test_the_role_is_looked_at_before_anything_else():
    decision = evaluate(facts(role="member", rate={"count": 11, "limit": 10, "windowSeconds": 60,
                                                   "retryAfterSeconds": 3},
                              requirements=[{"type": "hasSetting", "setting": "shopUrl", "satisfied": False}],
                              lastRunAt=NOW, previewFound=False, recipientCount=0))
    assert decision["reason"] == "workflows.policy.ownerRequired"


def test_rate_limit_refuses_the_eleventh_call():
    rate = {"count": 10, "limit": 10, "windowSeconds": 60, "retryAfterSeconds": 12}
    assert evaluate(facts(rate=rate))["allowed"]
    decision = evaluate(facts(rate={**rate, "count": 11}))
    assert decision["reason"] == "workflows.policy.rateLimited" and decision["reasonParams"]["retryAfterSeconds"] == 12


def test_the_first_unmet_prerequisite_is_the_reason():
    requirements = [{"type": "hasIntegration", "integration": "payments", "satisfied": True},
                    {"type": "hasSetting", "setting": "shopUrl", "satisfied": False},
                    {"type": "hasEvents", "eventType": "checkout_started", "minCount": Decimal(1), "satisfied": False}]
    decision = evaluate(facts(requirements=requirements))
    assert (decision["reason"], decision["reasonParams"]) == ("workflows.requires.setting", {"setting": "shopUrl"})


@pytest.mark.parametrize("last, remaining", [
    ("2026-11-26T11:00:00.000001Z", 1),   # a microsecond inside the hour: one minute left, rounded up
    ("2026-11-26T11:30:00Z", 30),
    ("2026-11-26T11:59:59Z", 60),
])
def test_cooldown_reports_the_minutes_left(last, remaining):
    decision = evaluate(facts(lastRunAt=last))
    assert decision["reason"] == "workflows.policy.cooldownActive" and decision["reasonParams"]["minutes"] == remaining


def test_cooldown_is_over_after_exactly_the_cooldown():
    assert evaluate(facts(lastRunAt="2026-11-26T11:00:00Z"))["allowed"]


def test_a_missing_preview_is_refused_before_the_count():
    decision = evaluate(facts(previewFound=False, recipientCount=0))
    assert decision["reason"] == "workflows.policy.previewRequired"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=5000))
def test_recipient_limits_and_the_large_audience_warning(count):
    decision = evaluate(facts(recipientCount=count))
    if count < 1:
        assert decision["reason"] == "workflows.policy.noRecipients"
    elif count > 1000:
        assert decision["reason"] == "workflows.policy.tooManyRecipients"
        assert decision["reasonParams"] == {"count": count, "max": 1000}
    else:
        assert decision["allowed"]
        assert decision["warnings"] == ([{"key": "owner.warning.manyRecipients", "params": {"count": count},
                                          "plural": "count"}] if count >= 500 else [])


def test_rules_without_their_facts_do_not_apply():
    assert evaluate({"role": "admin", "requiredRole": "admin"}) == {"allowed": True, "warnings": []}


def test_a_cooldown_held_by_a_queued_run_says_it_is_queued():
    """The run that holds the cooldown has sent nothing yet: not "this action ran"."""
    held = facts(lastRunAt="2026-01-01T11:30:00+00:00", now="2026-01-01T12:00:00+00:00")
    assert evaluate(held)["reason"] == "workflows.policy.cooldownActive"
    queued = evaluate(held | {"lastRunQueued": True})
    assert (queued["reason"], queued["reasonParams"]) == ("workflows.policy.alreadyQueued",
                                                          {"minutes": 30, "cooldownMinutes": 60})
