"""explain_recipient: why an address would (not) get an action's mail. Over generated shops it agrees
with preview and with the independent model of the recipient rules (test_workflows_consistency.py)
for every customer; it names each rule's verdict and the value that decided it, in the project's
language; an address that is no customer is answered, not refused."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg.types.json import Jsonb

from helpers.db import assert_refused, ingest
from helpers.workflows import PROMO, ago, add_member, checkout, create_run, preview, process_runs, ready_shop
from runhub_loader.constants import ACTION_IDS
from test_workflows_consistency import BUSY_SHOP, EXCLUSIONS, _build, _model, history_st


def explain(conn, project, actor, action, email, params=None) -> dict:
    return conn.execute("SELECT runhub.explain_recipient(project => %s, actor => %s, action => %s, email => %s,"
                        " params => %s)", (project, actor, action, email, Jsonb(params or {}))).fetchone()[0]


def _params(action, hist):
    return PROMO | {"segmentation": hist["segmentation"]} if action == "send_promo" else {}


@pytest.mark.slow  # hypothesis: 40 shop histories, every customer of each, three actions
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hist=history_st)
def test_explain_agrees_with_preview_for_every_customer(conn, hist):
    w = _build(conn, hist)
    emails = {e.email for e in w.events if e.email} | {"nobody@ex.com"}
    customers = {r[0] for r in conn.execute("SELECT email FROM runhub.customers WHERE project_id = %s", (w.project,))}
    for action in ACTION_IDS:
        params = _params(action, hist)
        chosen, _, _, verdicts = _model(w, action, params.get("segmentation", "recent_30d"))
        mailed = set()
        for email in sorted(emails):
            x = explain(conn, w.project, w.owner, action, email, params)
            assert x["customer"] == (email in customers), "one whose only events are runhub's sends is no customer"
            assert x["mailed"] == (email in verdicts and verdicts[email] is None), (action, email, x)
            if email in verdicts:
                assert x["audience"]["passed"] and x["excludedBy"] == verdicts[email], (action, email, x)
                applying = [e["exclusion"] for e in x["exclusions"] if e["applies"]]
                assert [e["exclusion"] for e in x["exclusions"]] == EXCLUSIONS[action]
                assert (applying[0] if applying else None) == verdicts[email], (action, email, x)
            elif x["customer"]:
                assert not x["audience"]["passed"] and x["exclusions"] == [], (action, email, x)
            if x["mailed"]:
                mailed.add(email)
        assert mailed == {e for e, _ in chosen}
        assert len(mailed) == preview(conn, w.project, w.owner, action, params)["count"]


def test_an_excluded_customer_is_told_why_with_the_value_that_decided(conn):
    """Mailed by a recovery an hour ago: the frequency cap names the action, when, and the cap."""
    project, owner = ready_shop(conn)
    checkout(conn, project, "ann@example.com", hours=2, cart="cart-1")
    checkout(conn, project, "bob@example.com", hours=3, cart="cart-2")
    preview(conn, project, owner, "recover_abandoned")
    create_run(conn, project, owner, "recover_abandoned", "first")
    process_runs(conn)
    checkout(conn, project, "ann@example.com", hours=1, cart="cart-3")  # a new cart, after the mail
    x = explain(conn, project, owner, "recover_abandoned", " Ann@Example.com ")
    assert (x["email"], x["mailed"], x["excludedBy"]) == ("ann@example.com", False, "frequencyCap")
    cap = next(e for e in x["exclusions"] if e["exclusion"] == "frequencyCap")
    assert cap["applies"] and cap["value"]["actionId"] == "recover_abandoned" and cap["value"]["hours"] == 16
    assert cap["text"]["key"] == "owner.explain.frequencyCap.yes"
    assert "Recover abandoned checkouts" in cap["text"]["text"] and "16 h" in cap["text"]["text"]
    assert x["text"]["text"] == "Left out: " + cap["text"]["text"]
    assert x["audience"]["passed"] and "cart-3" in x["audience"]["text"]["text"]


def test_it_answers_in_the_projects_language(conn):
    project, owner = ready_shop(conn, locale="de")
    ingest(conn, project, {"type": "user_signed_up", "occurredAt": ago(2), "idempotencyKey": "s1",
                           "customer": {"email": "neu@example.com"}})
    x = explain(conn, project, owner, "onboard_users", "neu@example.com")
    assert x["mailed"] and x["text"]["text"] == "Würde angeschrieben"
    assert x["audience"]["text"]["text"].startswith("Angemeldet am ")
    conn.execute("SELECT runhub.suppress(%s, %s, 'neu@example.com', 'bounced')", (project, owner))
    suppressed = explain(conn, project, owner, "onboard_users", "neu@example.com")
    [rule] = [x for x in suppressed["exclusions"] if x["exclusion"] == "suppressed"]
    assert rule["value"]["reason"] == "bounced" and rule["text"]["text"].endswith("(unzustellbar)"), rule
    stranger = explain(conn, project, owner, "onboard_users", "fremd@example.com")
    assert (stranger["customer"], stranger["mailed"]) == (False, False)
    assert stranger["text"]["text"].startswith("Kein Kunde dieses Shops")


def test_only_an_admin_may_ask_and_bad_input_is_refused(conn):
    project, owner = ready_shop(conn)
    member = add_member(conn, project, owner, "member")
    with pytest.raises(psycopg.Error) as excinfo:
        explain(conn, project, member, "send_promo", "a@example.com", PROMO)
    assert_refused(excinfo, "PT403", "auth.roleRequired")
    with pytest.raises(psycopg.Error) as excinfo:
        explain(conn, project, uuid.uuid4(), "send_promo", "a@example.com", PROMO)
    assert_refused(excinfo, "PT404", "projects.notFound")
    with pytest.raises(psycopg.Error) as excinfo:
        explain(conn, project, owner, "send_promo", "not an address", PROMO)
    assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "email"
    with pytest.raises(psycopg.Error) as excinfo:
        explain(conn, project, owner, "no_such_action", "a@example.com")
    assert_refused(excinfo, "PT404", "workflows.actionNotFound")


def test_the_busy_shop_is_explained_for_every_customer(conn):
    """The consistency test's busy shop, every customer, every action: explain and the model agree."""
    test_explain_agrees_with_preview_for_every_customer.hypothesis.inner_test(conn, BUSY_SHOP)
