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

from helpers.attribution import deliver, sent_hours_ago
from helpers.db import assert_refused
from helpers.workflows import (PROMO, SETTINGS, checkouts, create_run, get_run, preview, process_runs,
                               ready_shop, signup)

RECOVER = "recover_abandoned"


def held_out_project(conn, percent: int | None):
    """A project ready for actions, holding out percent (None: the default)."""
    settings = {k: v for k, v in SETTINGS.items() if k != "holdoutPercent"}
    return ready_shop(conn, settings=settings | ({} if percent is None else {"holdoutPercent": percent}))


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


# -- comparing the groups ----------------------------------------------------------------------------

def executed_recovery(conn, percent=50, carts=120):
    """A recovery run at percent, its mail sent, over carts customers; returns (project, owner, run, groups)."""
    project, owner = held_out_project(conn, percent)
    checkouts(conn, project, carts, hours=2, prefix=f"c{uuid.uuid4().hex[:6]}-")
    preview(conn, project, owner, RECOVER)
    run = create_run(conn, project, owner, RECOVER, uuid.uuid4().hex)["runId"]
    process_runs(conn)
    deliver(conn, run)
    an_hour_ago(conn, run)
    return project, owner, run, recipients_by_status(conn, run)


def an_hour_ago(conn, run) -> None:
    """The run executed and its mail sent an hour ago: payments of now fall inside its window."""
    sent_hours_ago(conn, run, 1)
    conn.execute("UPDATE runhub.workflow_runs SET executed_at = executed_at - interval '1 hour' WHERE id = %s", (run,))


def pay_for_cart(conn, project, email, amount=4200, cart=None, wid=None, hours_ago=0.0):
    """A payment by email; for its checkout's cart (looked up) unless cart is given."""
    cart = cart or conn.execute("SELECT cart_id FROM runhub.workflow_run_recipients WHERE project_id = %s AND email = %s "
                                "LIMIT 1", (project, email)).fetchone()[0]
    payload = {"cartId": cart} | ({"checkoutMetadata": {"wid": wid}} if wid else {})
    conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb({
        "type": "payment_succeeded", "occurredAt": ago_minutes(-1), "idempotencyKey": uuid.uuid4().hex,
        "customer": {"email": email}, "amountCents": amount, "currency": "EUR", "correlationId": cart,
        "payload": payload})))


def ago_minutes(minutes_ahead: float) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes_ahead)).isoformat()


def test_an_outcome_compares_the_mailed_with_the_held_out_by_the_same_rules(conn):
    project, owner, run, groups = executed_recovery(conn, percent=50, carts=160)
    mailed, held = sorted(groups["sent"]), sorted(groups["held_out"])
    for email in mailed[:30]:
        pay_for_cart(conn, project, email, amount=5000)
    for email in held[:6]:
        pay_for_cart(conn, project, email, amount=5000)
    # a mailed payer through the run's link alone (another cart and amount): attribution credits it,
    # the comparison does not (the held out have no link to pay through)
    pay_for_cart(conn, project, mailed[40], amount=777, cart="another-cart", wid=str(run))
    outcome = conn.execute("SELECT runhub.workflow_outcome(%s, %s, %s)", (project, owner, run)).fetchone()[0]
    inc = outcome["incremental"]
    assert inc["method"]["matching"] == "cart_or_amount" and inc["runs"] == 1
    assert (inc["mailed"]["recipients"], inc["heldOut"]["recipients"]) == (len(mailed), len(held))
    assert (inc["mailed"]["conversions"], inc["heldOut"]["conversions"]) == (30, 6)
    assert (inc["mailed"]["revenueCents"], inc["heldOut"]["revenueCents"]) == (150_000, 30_000)
    assert outcome["conversions"] == 31  # attribution, by its own rules, credits the link too
    assert inc["enoughData"] is True and inc["conversionLift"]["low"] <= inc["conversionLift"]["difference"]
    assert get_run(conn, project, owner, run)["outcome"]["incremental"] == inc  # every Outcome carries it


def test_a_run_without_a_holdout_has_no_incremental_figure(conn):
    project, owner = held_out_project(conn, 0)
    checkouts(conn, project, 3, hours=2)
    preview(conn, project, owner, RECOVER)
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    process_runs(conn)
    outcome = conn.execute("SELECT runhub.workflow_outcome(%s, %s, %s)", (project, owner, run)).fetchone()[0]
    assert "incremental" not in outcome
    assert conn.execute("SELECT runhub.action_lift(%s, %s, %s)", (project, owner, RECOVER)).fetchone()[0] is None


def test_small_groups_get_not_enough_data_instead_of_a_number(conn):
    project, owner, run, groups = executed_recovery(conn, percent=10, carts=30)
    outcome = conn.execute("SELECT runhub.workflow_outcome(%s, %s, %s)", (project, owner, run)).fetchone()[0]
    assert outcome["incremental"]["enoughData"] is False and "conversionLift" not in outcome["incremental"]
    assert outcome["incremental"]["minimum"] == {"recipientsPerGroup": 50, "conversions": 10}


def test_pooled_and_platform_figures_are_the_sums_of_their_runs(conn, login_as):
    runs = []
    for n in range(3):  # two runs in one shop, a third shop
        if n < 2:
            project, owner = (runs[0][0], runs[0][1]) if runs else held_out_project(conn, 30)
            checkouts(conn, project, 40, hours=2, prefix=f"r{n}-")
            preview(conn, project, owner, RECOVER)
            conn.execute("UPDATE runhub.workflow_runs SET requested_at = requested_at - interval '2 hours' "
                         "WHERE project_id = %s", (project,))
            run = create_run(conn, project, owner, RECOVER, f"k{n}")["runId"]
            process_runs(conn)
            deliver(conn, run)
            an_hour_ago(conn, run)
        else:
            project, owner, run, _ = executed_recovery(conn, percent=30, carts=40)
        for email in list(recipients_by_status(conn, run).get("held_out", set()))[:2] + \
                list(recipients_by_status(conn, run).get("sent", set()))[:5]:
            pay_for_cart(conn, project, email)
        runs.append((project, owner, run))

    def groups(run_ids):
        totals = [conn.execute("SELECT runhub._holdout_groups(%s, NULL, NULL, NULL)", (r,)).fetchone()[0] for r in run_ids]
        return {g: {k: sum(float(t[g][k]) for t in totals) for k in ("recipients", "conversions", "revenueCents")}
                for g in ("mailed", "heldOut")}

    def figure(result):
        return {g: {k: float(result[g][k]) for k in ("recipients", "conversions", "revenueCents")} for g in ("mailed", "heldOut")}

    shop, owner = runs[0][0], runs[0][1]
    pooled = conn.execute("SELECT runhub.action_lift(%s, %s, %s)", (shop, owner, RECOVER)).fetchone()[0]
    assert pooled["runs"] == 2 and figure(pooled) == groups([runs[0][2], runs[1][2]])
    with psycopg.connect(login_as("runhub_analyst"), autocommit=True) as analyst:
        platform = analyst.execute("SELECT runhub.platform_lift(%s)", (RECOVER,)).fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute("SELECT runhub.action_lift(%s, %s, %s)", (shop, owner, RECOVER))
    assert platform["runs"] == 3 and platform["projects"] == 2
    assert figure(platform) == groups([r for _, _, r in runs])
    assert str(shop) not in json_dumps(platform) and str(runs[2][0]) not in json_dumps(platform)  # no shop named
    with psycopg.connect(login_as("runhub_app"), autocommit=True) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT runhub.platform_lift(%s)", (RECOVER,))


def json_dumps(value) -> str:
    import json

    return json.dumps(value)


def test_the_digest_quotes_what_the_mail_caused_when_the_comparison_shows_it(conn):
    from helpers.digest import render

    project, owner, run, groups = executed_recovery(conn, percent=50, carts=240)
    for email in sorted(groups["sent"])[:45]:
        pay_for_cart(conn, project, email, amount=5000)
    for email in sorted(groups["held_out"])[:4]:
        pay_for_cart(conn, project, email, amount=5000)
    today = conn.execute("SELECT (now() AT TIME ZONE timezone)::date FROM runhub.projects WHERE id = %s",
                         (project,)).fetchone()[0]
    content = conn.execute("SELECT runhub.generate_digest(%s, %s)", (project, today)).fetchone()[0]
    incremental = content["lastOutcome"]["outcome"]["incremental"]
    assert incremental["significant"] and incremental["incrementalRevenueCents"] > 0
    text = render(content | {"runHubUrl": "https://app.example/run"}, "en").text  # the sender adds the link
    assert "Your last action worked:" in text and "more than without its e-mail (measured against a holdout group)" in text
    conn.execute("UPDATE runhub.projects SET settings = settings || '{\"holdoutPercent\": 0}' WHERE id = %s", (project,))
    # the next run has no holdout: its sales are only attributed, and said to be
    conn.execute("UPDATE runhub.workflow_runs SET requested_at = requested_at - interval '2 hours' WHERE id = %s", (run,))
    checkouts(conn, project, 2, hours=2, prefix="later-")
    preview(conn, project, owner, RECOVER)
    later = create_run(conn, project, owner, RECOVER, "later")["runId"]
    process_runs(conn)
    deliver(conn, later)
    an_hour_ago(conn, later)
    pay_for_cart(conn, project, "later-00@ex.com", amount=3000)
    content = conn.execute("SELECT runhub.generate_digest(%s, %s)", (project, today)).fetchone()[0]
    assert "incremental" not in content["lastOutcome"]["outcome"]
    text = render(content | {"runHubUrl": "https://app.example/run"}, "en").text
    assert "Your last action worked:" not in text and "in sales attributed to it" in text
