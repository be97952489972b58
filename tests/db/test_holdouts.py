"""Holdout groups: a share of a money action's eligible recipients is left unmailed, chosen by a keyed
hash of the run and the address — the same on every execution of a run, whatever the order, close
to the set percent — and never mailed."""
from __future__ import annotations

import math
import random
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.attribution import deliver
from helpers.db import assert_refused
from helpers.workflows import (PROMO, SETTINGS, checkouts, create_run, get_run, preview, process_runs,
                               ready_project, signup)

RECOVER = "recover_abandoned"


def held_out_project(conn, percent: int | None):
    """A project ready for actions, holding out percent (None: the default)."""
    settings = {k: v for k, v in SETTINGS.items() if k != "holdoutPercent"}
    return ready_project(conn, settings=settings | ({} if percent is None else {"holdoutPercent": percent}))


def recipients_by_status(conn, run) -> dict[str, set[str]]:
    rows = conn.execute("SELECT status, email FROM runhub.workflow_run_recipients WHERE run_id = %s", (run,)).fetchall()
    found: dict[str, set[str]] = {}
    for status, email in rows:
        found.setdefault(status, set()).add(email)
    return found


def mailed_addresses(conn, run) -> set[str]:
    return {e for (e,) in conn.execute("SELECT to_email FROM runhub.outbox WHERE run_id = %s", (run,))}


def predicted(conn, run, emails, percent: int) -> set[str]:
    return {e for (e,) in conn.execute(
        "SELECT e FROM unnest(%s::text[]) e WHERE runhub._held_out(runhub._holdout_key(), %s, e, %s)",
        (list(emails), run, percent))}


def test_the_default_holds_out_ten_percent_of_a_recovery_and_never_mails_them(conn):
    project, owner = held_out_project(conn, None)
    emails = checkouts(conn, project, 60, hours=2)
    shown = preview(conn, project, owner, RECOVER)
    assert shown["holdout"]["percent"] == 10 and (shown["holdout"]["mailed"], shown["holdout"]["heldOut"]) == (54, 6)
    assert shown["holdout"]["text"]["key"] == "owner.holdout.split"
    assert shown["holdout"]["text"]["text"] == "Recipients: about 54. Held out to measure the effect: about 6 (10%)"
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    assert process_runs(conn) == 1
    groups = recipients_by_status(conn, run)
    assert groups["held_out"] == predicted(conn, run, emails, 10)
    assert groups["queued"] | groups["held_out"] == set(emails) and not groups["queued"] & groups["held_out"]
    assert mailed_addresses(conn, run) == groups["queued"]  # no message row for anyone held out
    assert conn.execute("SELECT count(*) FROM runhub.workflow_run_recipients WHERE run_id = %s AND status = 'held_out' "
                        "AND link IS NOT NULL", (run,)).fetchone()[0] == 0
    assert conn.execute("SELECT holdout_percent FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0] == 10
    deliver(conn, run)
    sent_to = {e for (e,) in conn.execute("SELECT customer_email FROM runhub.business_events "
                                          "WHERE project_id = %s AND event_type = 'recovery_email_sent'", (project,))}
    assert sent_to == groups["queued"]  # no *_email_sent event for the held out
    result = get_run(conn, project, owner, run)["result"]
    assert result["heldOut"] == len(groups["held_out"]) and result["totalRecipients"] == 60


def test_a_run_executed_again_after_a_crash_holds_out_the_same_people(db_url, conn):
    project, owner = held_out_project(conn, 30)
    checkouts(conn, project, 40, hours=2)
    preview(conn, project, owner, RECOVER)
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    with psycopg.connect(db_url) as crashed:  # the execution's transaction never commits
        crashed.execute("SELECT runhub.process_runs(10)")
        first = recipients_by_status(crashed, run)
        crashed.rollback()
    assert conn.execute("SELECT count(*) FROM runhub.workflow_run_recipients WHERE run_id = %s", (run,)).fetchone()[0] == 0
    assert process_runs(conn) == 1
    again = recipients_by_status(conn, run)
    assert again == first and again["held_out"]
    assert not mailed_addresses(conn, run) & again["held_out"]


@pytest.mark.parametrize("percent", [5, 10, 30, 50])
def test_the_assignment_is_close_to_the_percent_and_ignores_the_order(conn, percent):
    """A fixed key, so the check is deterministic; the bound is the binomial's, 4 standard deviations."""
    key = bytes(range(32))
    pairs = [(str(uuid.UUID(int=random.Random(n).getrandbits(128))), f"p{n}@example.com") for n in range(20_000)]
    held = conn.execute("SELECT count(*) FILTER (WHERE runhub._held_out(%s, r::uuid, e, %s)) "
                        "FROM unnest(%s::text[], %s::text[]) AS u(r, e)",
                        (key, percent, [r for r, _ in pairs], [e for _, e in pairs])).fetchone()[0]
    n, p = len(pairs), percent / 100
    assert abs(held - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (held, n * p)
    run = uuid.uuid4()
    emails = [e for _, e in pairs[:500]]
    shuffled = random.Random(7).sample(emails, len(emails))
    pick = "SELECT array_agg(e ORDER BY e) FROM unnest(%s::text[]) e WHERE runhub._held_out(%s, %s, e, %s)"
    assert conn.execute(pick, (emails, key, run, percent)).fetchone()[0] == \
        conn.execute(pick, (shuffled, key, run, percent)).fetchone()[0]
    other_key = bytes(range(1, 33))  # another database's key picks other people
    assert conn.execute(pick, (emails, key, run, percent)).fetchone()[0] != \
        conn.execute(pick, (emails, other_key, run, percent)).fetchone()[0]


def test_no_holdout_at_zero_percent_nor_for_an_action_whose_outcome_is_not_money(conn):
    project, owner = held_out_project(conn, 0)
    checkouts(conn, project, 20, hours=2)
    assert "holdout" not in preview(conn, project, owner, RECOVER)
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    process_runs(conn)
    assert set(recipients_by_status(conn, run)) == {"queued"} and len(mailed_addresses(conn, run)) == 20
    assert conn.execute("SELECT holdout_percent FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0] == 0
    onboarding, admin = held_out_project(conn, 50)
    for n in range(20):
        signup(conn, onboarding, f"new{n}@example.com")
    assert "holdout" not in preview(conn, onboarding, admin, "onboard_users")
    run = create_run(conn, onboarding, admin, "onboard_users", "k")["runId"]
    process_runs(conn)
    assert set(recipients_by_status(conn, run)) == {"queued"}
    assert conn.execute("SELECT holdout_percent FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0] is None


def test_a_promotion_holds_out_too(conn):
    project, owner = held_out_project(conn, 50)
    for n in range(30):
        conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb({
            "type": "lead_created", "occurredAt": "2026-12-01T10:00:00Z", "idempotencyKey": uuid.uuid4().hex,
            "customer": {"email": f"lead{n}@example.com"}})))
    shown = preview(conn, project, owner, "send_promo", PROMO)
    assert (shown["holdout"]["mailed"], shown["holdout"]["heldOut"]) == (15, 15)
    run = create_run(conn, project, owner, "send_promo", "k", PROMO)["runId"]
    process_runs(conn)
    groups = recipients_by_status(conn, run)
    assert groups["held_out"] and mailed_addresses(conn, run) == groups["queued"]


def test_a_run_whose_every_recipient_is_held_out_succeeds_with_nothing_sent(conn):
    # A shop with one cart, at 50 %: its run holds the one recipient out about every other time
    # (run ids are random); 40 shops make missing it a 1-in-10^12 event.
    for attempt in range(40):
        project, owner = held_out_project(conn, 50)
        checkouts(conn, project, 1, hours=2)
        preview(conn, project, owner, RECOVER)
        run = create_run(conn, project, owner, RECOVER, "k")["runId"]
        process_runs(conn)
        if recipients_by_status(conn, run).get("held_out"):
            break
    state = get_run(conn, project, owner, run)
    assert state["status"] == "succeeded", state  # done at once: nothing to send
    assert (state["result"]["heldOut"], state["result"]["totalRecipients"], state["result"]["successful"]) == (1, 1, 0)
    assert not mailed_addresses(conn, run)


def test_a_held_out_cart_is_not_mailed_by_a_later_recovery(conn):
    project, owner = held_out_project(conn, 50)
    emails = checkouts(conn, project, 20, hours=2)
    preview(conn, project, owner, RECOVER)
    first = create_run(conn, project, owner, RECOVER, "first")["runId"]
    process_runs(conn)
    held = recipients_by_status(conn, first)["held_out"]
    deliver(conn, first)
    conn.execute("UPDATE runhub.workflow_runs SET requested_at = requested_at - interval '2 hours' WHERE id = %s", (first,))
    conn.execute("UPDATE runhub.projects SET settings = settings || '{\"frequencyCapHours\": 0}' WHERE id = %s", (project,))
    shown = preview(conn, project, owner, RECOVER)
    excluded = {e["exclusion"]: e["count"] for e in shown["excluded"]}
    assert excluded["alreadyContacted"] == len(emails)  # mailed or held out, each cart was decided once
    assert held


@pytest.mark.parametrize("value", [-1, 51, 10.5, "10", True, [10]])
def test_a_bad_holdout_percent_is_refused_and_changes_nothing(conn, value):
    project, owner = held_out_project(conn, 20)
    with pytest.raises(psycopg.Error) as refused:
        conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb({"holdoutPercent": value})))
    assert assert_refused(refused, "PT400", "common.invalidInput") == {"field": "holdoutPercent",
                                                                       "reason": "must be a whole percent, 0 to 50"}
    assert conn.execute("SELECT settings ->> 'holdoutPercent' FROM runhub.projects WHERE id = %s",
                        (project,)).fetchone()[0] == "20"


def test_the_server_computes_the_lift_as_the_module_does(conn):
    """runhub._lift is plpython/lift.py inside the server (its system python3)."""
    from plpython import lift

    mailed = {"recipients": 900, "conversions": 90, "revenueCents": 450000, "revenueSquares": 2_700_000_000}
    held = {"recipients": 100, "conversions": 5, "revenueCents": 25000, "revenueSquares": 150_000_000}
    served = conn.execute("SELECT runhub._lift(%s, %s)", (Jsonb(mailed), Jsonb(held))).fetchone()[0]
    assert json_round(served) == json_round(lift.lift(mailed, held))
    assert served["enoughData"] is True and isinstance(served["significant"], bool)


def json_round(value):
    """Floats to 9 significant digits (numeric in jsonb against Python's float)."""
    if isinstance(value, dict):
        return {k: json_round(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return value
    return float(f"{float(value):.9g}") if type(value).__name__ == "Decimal" else value
