"""plpython/policy.py says why (a reason key and its params); the error catalog (sql/00_errors.sql,
runhub.error_catalog()) owns each reason's SQLSTATE, so there is one place for it. Every reason the
policy can give is in the catalog, with the status the contract documents for its kind."""
from __future__ import annotations

import re
from pathlib import Path

import plpython.policy as policy

SOURCE = Path(policy.__file__).read_text()
REASONS = set(re.findall(r'"((?:workflows|auth)\.[a-zA-Z.]+)"', SOURCE))
DOCUMENTED = {  # docs/sql-contract.md, the policy's refusals
    "workflows.policy.ownerRequired": "PT403", "auth.roleRequired": "PT403", "workflows.policy.actorNotMember": "PT403",
    "workflows.policy.rateLimited": "PT429", "workflows.policy.cooldownActive": "PT409",
    "workflows.policy.alreadyQueued": "PT409", "workflows.requires.setting": "PT422",
    "workflows.policy.noRecipients": "PT422", "workflows.policy.tooManyRecipients": "PT422",
}


def test_every_reason_the_policy_gives_is_in_the_catalog_with_its_status(conn):
    catalog = dict(conn.execute("SELECT key, sqlstate FROM runhub.error_catalog()").fetchall())
    refusals = {r for r in REASONS if not r.startswith("workflows.warn")}
    assert len(refusals) >= 12 and DOCUMENTED.keys() <= refusals, sorted(refusals)
    assert not refusals - catalog.keys(), sorted(refusals - catalog.keys())
    assert {r: catalog[r] for r in DOCUMENTED} == DOCUMENTED


def test_the_policy_carries_no_status_of_its_own():
    assert not re.findall(r'"PT\d{3}"|\bsqlstate\b', SOURCE)
