"""Workflow policy: the guardrails a run must pass, at trigger time and again at execution time.

Pure rules over plain data. SQL gathers the facts (roles, prerequisites, last run, counts) and
passes them in; the decision comes back with the plan's i18n key, its params and the SQLSTATE
the API raises it with. The first rule that refuses decides; warnings never refuse.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from ._export import sql_function

ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}


def _refuse(reason: str, **params) -> dict:
    """A refusal: its reason key and params. The SQLSTATE is the error catalog's (sql/00_errors.sql)."""
    return {"allowed": False, "reason": reason, "reasonParams": params, "warnings": []}


def _instant(value) -> datetime | None:
    if value is None:
        return None
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _number(value) -> int:
    return int(value) if isinstance(value, (int, Decimal)) else int(str(value))


def check_role(role: str | None, required: str) -> dict | None:
    if role is None:  # only at execution: trigger time refuses non-members before policy (PT404)
        return _refuse("workflows.policy.actorNotMember", required=required)
    if ROLE_RANK.get(role, 0) >= ROLE_RANK[required]:
        return None
    if required == "owner":
        return _refuse("workflows.policy.ownerRequired", required=required, role=role)
    return _refuse("auth.roleRequired", required=required, role=role)


def check_rate(rate: dict | None) -> dict | None:
    if rate and _number(rate["count"]) > _number(rate["limit"]):
        return _refuse("workflows.policy.rateLimited", limit=_number(rate["limit"]),
                       windowSeconds=_number(rate["windowSeconds"]),
                       retryAfterSeconds=max(1, _number(rate["retryAfterSeconds"])))
    return None


def check_requirements(requirements: list[dict]) -> dict | None:
    """Prerequisites, in registry order: the first unmet one is the reason."""
    for req in requirements:
        if req.get("satisfied"):
            continue
        kind = req["type"]
        if kind == "hasIntegration":
            return _refuse("workflows.requires.integration", integration=req["integration"])
        if kind == "hasSetting":
            return _refuse("workflows.requires.setting", setting=req["setting"])
        if kind == "hasEvents":
            return _refuse("workflows.requires.events", eventType=req["eventType"],
                           minCount=_number(req.get("minCount", 1)))
        if kind == "hasRecipients":
            return _refuse("workflows.requires.recipients", source=req["source"])
        return _refuse("workflows.requires.unknown", type=kind)
    return None


def check_cooldown(last_run_at, now, cooldown_minutes: int, last_run_queued: bool = False) -> dict | None:
    """A run within the cooldown holds it; one still queued says so (it has sent nothing yet)."""
    last, current = _instant(last_run_at), _instant(now)
    if last is None:
        return None
    remaining = cooldown_minutes * 60 - (current - last).total_seconds()
    if remaining > 0:
        reason = "workflows.policy.alreadyQueued" if last_run_queued else "workflows.policy.cooldownActive"
        return _refuse(reason, minutes=max(1, -(-int(remaining) // 60)), cooldownMinutes=cooldown_minutes)
    return None


def check_recipients(count: int, policy: dict) -> dict | None:
    minimum, maximum = _number(policy["minRecipients"]), _number(policy["maxRecipients"])
    if count < minimum:
        return _refuse("workflows.policy.noRecipients", count=count, min=minimum)
    if count > maximum:
        return _refuse("workflows.policy.tooManyRecipients", count=count, max=maximum)
    return None


def warnings_for(count: int, policy: dict) -> list[dict]:
    """Each warning as an i18n key with its params (and the param its plural form follows)."""
    warnings = []
    threshold = _number(policy.get("warnAtRecipients", 500))
    if count >= threshold:
        warnings.append({"key": "owner.warning.manyRecipients", "params": {"count": count}, "plural": "count"})
    return warnings


def evaluate(facts: dict) -> dict:
    """The decision on the facts given: each rule applies when its facts are present, in the order
    role, rate, prerequisites, cooldown, preview, recipient count. The first refusal decides."""
    policy = facts.get("policy", {})
    count = _number(facts["recipientCount"]) if "recipientCount" in facts else None
    checks = []
    if "requiredRole" in facts:
        checks.append(lambda: check_role(facts.get("role"), facts["requiredRole"]))
    if "rate" in facts:
        checks.append(lambda: check_rate(facts["rate"]))
    if "requirements" in facts:
        checks.append(lambda: check_requirements(facts["requirements"]))
    if "now" in facts:
        checks.append(lambda: check_cooldown(facts.get("lastRunAt"), facts["now"], _number(policy["cooldownMinutes"]),
                                             bool(facts.get("lastRunQueued"))))
    if facts.get("previewFound") is False:
        checks.append(lambda: _refuse("workflows.policy.previewRequired",
                                      maxAgeMinutes=_number(policy["previewMaxAgeMinutes"])))
    if count is not None:
        checks.append(lambda: check_recipients(count, policy))
    warnings = warnings_for(count, policy) if count is not None else []
    for check in checks:
        refusal = check()
        if refusal:
            return {**refusal, "warnings": warnings}
    return {"allowed": True, "warnings": warnings}


@sql_function("runhub._evaluate_policy(p_facts jsonb) RETURNS jsonb")
def evaluate_policy(p_facts: dict) -> dict:
    return evaluate(p_facts)
