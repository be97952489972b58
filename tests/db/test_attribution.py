"""Attribution: every payment_succeeded credited to at most one workflow mail that runhub sent —
by the run link it carries (high), else the last mail to the payer within the window for the same
cart (medium) or amount (low), or the address alone where the project allows it (low) — and the
Outcome a run, an action and a digest show from those credits."""
from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.attribution import attribution_off, credit, explain, outcome, pay, promo_run, recovery_run, sent_hours_ago
from helpers.db import assert_refused, count_rows, ingest, new_project
from helpers.workflows import ago, connect, get_run, ready_shop


# -- the plan's checklist -------------------------------------------------------------------------

def test_a_run_link_credits_the_run_with_high_confidence(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    payment = pay(conn, project, "someone.else@shop.example", amount=999, wid=str(run))
    got = credit(conn, payment)
    assert (str(got["run_id"]), got["method"], got["confidence"], got["amount_cents"]) == (str(run), "wid_link", "high", 999)
    assert explain(conn, project, owner, payment)["text"].startswith(f"Credited to run {run} (recover_abandoned) by wid_link")


def test_the_run_link_is_read_from_the_payload_too(conn):
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    payment = pay(conn, project, wid=str(run), metadata=False)
    assert credit(conn, payment)["method"] == "wid_link"


def test_address_fallback_by_cart_then_amount_with_normalized_addresses(conn):
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200), "bob@shop.example": ("cart-2", 1500)})
    by_cart = pay(conn, project, "  ANN@Shop.Example ", amount=5000, cart="cart-1")
    by_correlation = pay(conn, project, "ann@shop.example", amount=5000, correlation="cart-1")
    by_amount = pay(conn, project, "bob@shop.example", amount=1500)
    assert [credit(conn, p)["method"] for p in (by_cart, by_correlation, by_amount)] == \
        ["cart_match", "cart_match", "amount_match"]
    assert [credit(conn, p)["confidence"] for p in (by_cart, by_amount)] == ["medium", "low"]


def test_the_window_is_48_hours_from_the_send_judged_by_when_the_payment_happened(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200), "bob@shop.example": ("cart-2", 1500)})
    sent_hours_ago(conn, run, 50)
    inside = pay(conn, project, "ann@shop.example", cart="cart-1", hours_ago=3)   # 47 h after the mail
    outside = pay(conn, project, "bob@shop.example", cart="cart-2", hours_ago=1)  # 49 h after
    assert credit(conn, inside)["method"] == "cart_match"
    assert credit(conn, outside) is None
    assert explain(conn, project, owner, outside)["reason"] == "attribution.noMailInWindow"


def test_a_late_arriving_payment_counts_by_when_it_happened(conn):
    """Reported today, but it happened 2 hours after the mail that went out 3 days ago."""
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    sent_hours_ago(conn, run, 72)
    late = pay(conn, project, "ann@shop.example", cart="cart-1", hours_ago=70)
    assert credit(conn, late)["method"] == "cart_match"


def test_a_payment_that_happened_before_the_mail_never_counts(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    sent_hours_ago(conn, run, 1)
    before = pay(conn, project, "ann@shop.example", cart="cart-1", wid=str(run), hours_ago=2)
    assert credit(conn, before) is None
    why = explain(conn, project, owner, before)
    assert why["link"]["reason"] == "attribution.link.noMailBeforePayment" and why["reason"] == "attribution.noMailInWindow"


def test_one_payment_is_credited_once_even_ingested_from_many_sessions_at_once(conn, db_url):
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    body = {"type": "payment_succeeded", "occurredAt": ago(0.5), "idempotencyKey": "stripe:pi_1", "amountCents": 4200,
            "currency": "EUR", "customer": {"email": "ann@shop.example"}, "payload": {"cartId": "cart-1"}}
    sessions = [connect(db_url, autocommit=False) for _ in range(8)]
    start, results = threading.Barrier(len(sessions)), []

    def ingest_once(session):
        start.wait()
        results.append(session.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(body))).fetchone()[0])
        session.commit()

    threads = [threading.Thread(target=ingest_once, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in sessions:
        s.close()
    assert len({r["eventId"] for r in results}) == 1 and sum(r["inserted"] for r in results) == 1
    assert count_rows(conn, "workflow_attributions") == 1


# -- links that do not count --------------------------------------------------------------------------

def test_another_projects_run_link_is_ignored_and_the_cart_still_counts(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    _, _, foreign = recovery_run(conn, {"zed@other.example": ("cart-9", 100)})
    payment = pay(conn, project, "ann@shop.example", cart="cart-1", wid=str(foreign))
    assert (str(credit(conn, payment)["run_id"]), credit(conn, payment)["method"]) == (str(run), "cart_match")
    assert explain(conn, project, owner, payment)["link"]["reason"] == "attribution.link.unknownRun"


def test_a_run_that_never_mailed_is_no_link(conn):
    project, owner = ready_shop(conn)
    ingest(conn, project, {"type": "user_signed_up", "occurredAt": ago(1), "idempotencyKey": "s1",
                           "customer": {"email": "new@shop.example"}})
    conn.execute("SELECT runhub.preview(%s, %s, 'recover_abandoned', '{}')", (project, owner))
    unsent = conn.execute("""INSERT INTO runhub.workflow_runs (project_id, action_id, idempotency_key, triggered_by,
                                                               triggered_by_role, outcome_window_hours)
                             VALUES (%s, 'recover_abandoned', 'never', %s, 'owner', 48) RETURNING id""",
                          (project, owner)).fetchone()[0]
    payment = pay(conn, project, "new@shop.example", wid=str(unsent))
    assert credit(conn, payment) is None
    assert explain(conn, project, owner, payment)["link"]["reason"] == "attribution.link.noMailBeforePayment"


@pytest.mark.parametrize("wid", ["not-a-uuid", "'; DROP TABLE runhub.workflow_runs; --", "x" * 5000, ""])
def test_a_malformed_link_is_ignored_the_payment_kept_and_the_cart_counts(conn, wid):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    payment = pay(conn, project, "ann@shop.example", cart="cart-1", wid=wid)
    assert credit(conn, payment)["method"] == "cart_match"
    why = explain(conn, project, owner, payment)
    assert why["link"]["reason"] == "attribution.link.malformed" and len(why["link"]["text"]) < 300


def test_a_link_to_a_run_whose_mail_left_more_than_the_window_before(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    sent_hours_ago(conn, run, 60)
    payment = pay(conn, project, "ann@shop.example", wid=str(run))
    assert credit(conn, payment) is None
    assert explain(conn, project, owner, payment)["link"]["reason"] == "attribution.link.outsideWindow"


# -- what never counts ------------------------------------------------------------------------------

def test_a_payment_in_another_currency_is_skipped_and_says_so(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    payment = pay(conn, project, "ann@shop.example", cart="cart-1", wid=str(run), currency="USD")
    assert credit(conn, payment) is None
    why = explain(conn, project, owner, payment)
    assert (why["reason"], why["params"]) == ("attribution.currencyMismatch", {"paymentCurrency": "USD", "projectCurrency": "EUR"})


def test_the_last_touch_wins_between_two_candidate_mails(conn):
    project, owner, first = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)}, hours_ago=30)
    conn.execute("UPDATE runhub.workflow_runs SET requested_at = now() - interval '31 hours' WHERE id = %s", (first,))
    _, _, second = promo_run(conn, ["ann@shop.example"], project=project, owner=owner)
    conn.execute("SELECT runhub.update_project_settings(%s, %s, '{\"emailOnlyAttribution\": true}')", (project, owner))
    payment = pay(conn, project, "ann@shop.example", amount=4200)
    assert str(credit(conn, payment)["run_id"]) == str(second)  # the later mail, though the older matched the amount too
    assert credit(conn, payment)["method"] == "email_exact"


def test_an_address_only_match_counts_only_where_the_project_turns_it_on(conn):
    project, owner, run = promo_run(conn, ["ann@shop.example", "bob@shop.example"])
    off = pay(conn, project, "ann@shop.example", amount=777)
    assert credit(conn, off) is None
    assert explain(conn, project, owner, off)["reason"] == "attribution.noMatch"
    conn.execute("SELECT runhub.update_project_settings(%s, %s, '{\"emailOnlyAttribution\": true}')", (project, owner))
    on = pay(conn, project, "bob@shop.example", amount=777)
    assert (credit(conn, on)["method"], credit(conn, on)["confidence"]) == ("email_exact", "low")
    assert conn.execute("SELECT runhub.attribute_payments(%s, now() - interval '1 day')", (project,)).fetchone()[0] == 1


def test_a_forged_send_is_refused_and_could_never_have_counted(conn):
    """A client cannot ingest a send; and a *_email_sent row that exists anyway (written before the
    refusal, or by hand) is no touch: touches are the outbox's sent mail."""
    project, owner = ready_shop(conn)
    with pytest.raises(psycopg.Error) as excinfo:
        ingest(conn, project, {"type": "recovery_email_sent", "occurredAt": ago(1), "idempotencyKey": "x",
                               "customer": {"email": "ann@shop.example"}, "amountCents": 4200, "currency": "EUR"})
    assert_refused(excinfo, "PT400", "events.reservedForRunhub")
    conn.execute("""INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key,
                        correlation_id, customer_email, amount_cents, currency, payload)
                    VALUES (%s, 'recovery_email_sent', now() - interval '1 hour', 'mail:<forged@x>', 'cart-1',
                            'ann@shop.example', 4200, 'EUR', %s)""",
                 (project, Jsonb({"workflowRunId": str(uuid.uuid4()), "cartId": "cart-1"})))
    payment = pay(conn, project, "ann@shop.example", cart="cart-1", amount=4200)
    assert credit(conn, payment) is None


def test_credits_are_append_only(conn):
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    pay(conn, project, "ann@shop.example", cart="cart-1")
    for sql in ("UPDATE runhub.workflow_attributions SET amount_cents = 1", "DELETE FROM runhub.workflow_attributions",
                "TRUNCATE runhub.workflow_attributions"):
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute(sql)
        assert assert_refused(excinfo, "PT409", "events.appendOnly")["table"] == "workflow_attributions"
    conn.execute("DELETE FROM runhub.projects WHERE id = %s", (project,))  # a project's deletion takes its credits
    assert count_rows(conn, "workflow_attributions") == 0


# -- the Outcome ------------------------------------------------------------------------------------

def test_the_outcome_of_a_run_its_action_and_get_run(conn):
    carts = {f"c{i}@shop.example": (f"cart-{i}", 1000 + i) for i in range(4)}
    project, owner, run = recovery_run(conn, carts)
    assert outcome(conn, project, owner, run) | {"windowEndsAt": None} == {
        "model": "last_touch_48h", "windowHours": 48, "conversions": 0, "revenueCents": 0, "currency": "EUR",
        "confidence": None, "matchedBy": None, "byMethod": {}, "windowEndsAt": None, "final": False}
    pay(conn, project, "c0@shop.example", cart="cart-0", amount=5000)
    pay(conn, project, "c1@shop.example", cart="cart-1", amount=2000)
    pay(conn, project, "c2@shop.example", amount=1002)
    pay(conn, project, "c3@shop.example", wid=str(run), amount=300)
    got = outcome(conn, project, owner, run)
    assert (got["conversions"], got["revenueCents"], got["confidence"], got["matchedBy"]) == (4, 8302, "low", "cart_match")
    assert got["byMethod"] == {"cart_match": {"conversions": 2, "revenueCents": 7000},
                               "amount_match": {"conversions": 1, "revenueCents": 1002},
                               "wid_link": {"conversions": 1, "revenueCents": 300}}
    assert got["final"] is False  # the window is open
    assert get_run(conn, project, owner, run)["outcome"] == got
    listed = conn.execute("SELECT runhub.list_runs(%s, %s)", (project, owner)).fetchone()[0]
    assert listed[0]["outcome"] == got
    actions = {a["id"]: a for a in conn.execute("SELECT runhub.list_actions(%s, %s)", (project, owner)).fetchone()[0]}
    last = actions["recover_abandoned"]["lastOutcome"]
    assert last["runId"] == str(run) and last["revenueCents"] == 8302 and "completedAt" in last
    assert actions["onboard_users"]["lastOutcome"] is None


def test_the_outcome_is_final_once_the_window_closed_on_a_settled_run(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    assert conn.execute("SELECT status FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0] == "succeeded"
    conn.execute("UPDATE runhub.workflow_runs SET last_sent_at = now() - interval '49 hours' WHERE id = %s", (run,))
    got = outcome(conn, project, owner, run)
    assert got["final"] is True and got["conversions"] == 0


def test_onboarding_has_no_money_outcome(conn):
    project, owner = ready_shop(conn)
    ingest(conn, project, {"type": "user_signed_up", "occurredAt": ago(1), "idempotencyKey": "s1",
                           "customer": {"email": "new@shop.example"}})
    conn.execute("SELECT runhub.preview(%s, %s, 'onboard_users', '{}')", (project, owner))
    run = conn.execute("SELECT runhub.create_run(%s, %s, 'onboard_users', 'k')", (project, owner)).fetchone()[0]["runId"]
    assert outcome(conn, project, owner, run) is None


def test_a_promotion_earns_through_its_tracked_link(conn):
    project, owner, run = promo_run(conn, ["ann@shop.example", "bob@shop.example", "cy@shop.example"])
    links = {r[0] for r in conn.execute("SELECT link FROM runhub.workflow_run_recipients WHERE run_id = %s", (run,))}
    assert links == {f"https://shop.example/?wid={run}"}
    for amount in (10000, 20000, 4000):
        pay(conn, project, None, amount=amount, wid=str(run))
    got = outcome(conn, project, owner, run)
    assert (got["conversions"], got["revenueCents"], got["confidence"], got["matchedBy"]) == (3, 34000, "high", "wid_link")


def test_explain_and_outcome_check_the_actor(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    payment = pay(conn, project, "ann@shop.example", cart="cart-1")
    stranger_project, stranger = new_project(conn)
    for sql, args in (("SELECT runhub.explain_attribution(%s, %s, %s)", (project, stranger, payment)),
                      ("SELECT runhub.workflow_outcome(%s, %s, %s)", (project, stranger, run))):
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute(sql, args)
        assert_refused(excinfo, "PT404", "projects.notFound")
    with pytest.raises(psycopg.Error) as excinfo:  # another project's payment
        explain(conn, stranger_project, stranger, payment)
    assert_refused(excinfo, "PT404", "events.notFound")


def test_backfill_credits_what_the_trigger_missed_and_adds_nothing_twice(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200), "bob@shop.example": ("cart-2", 99)})
    with attribution_off(conn):
        missed = [pay(conn, project, "ann@shop.example", cart="cart-1"), pay(conn, project, "bob@shop.example", amount=99)]
    assert [credit(conn, p) for p in missed] == [None, None]
    assert explain(conn, project, owner, missed[0])["recorded"] is False  # a dry run says what it would credit
    since = "2000-01-01T00:00:00Z"
    assert conn.execute("SELECT runhub.attribute_payments(%s, %s)", (project, since)).fetchone()[0] == 2
    assert conn.execute("SELECT runhub.attribute_payments(%s, %s)", (project, since)).fetchone()[0] == 0
    assert [credit(conn, p)["method"] for p in missed] == ["cart_match", "amount_match"]


def test_two_backfills_at_once_credit_a_payment_once_and_neither_fails(conn, db_url):
    """The second backfill meets the first's uncredited-then-credited payment: it waits for the first's
    credit to commit, finds the payment credited, adds nothing and raises nothing."""
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    with attribution_off(conn):
        missed = pay(conn, project, "ann@shop.example", cart="cart-1")
    since = "2000-01-01T00:00:00Z"
    first, second = (connect(db_url, autocommit=False) for _ in range(2))
    try:
        assert first.execute("SELECT runhub.attribute_payments(%s, %s)", (project, since)).fetchone()[0] == 1
        second_pid, outcome_of_second = second.info.backend_pid, []

        def backfill_again():
            try:
                outcome_of_second.append(second.execute("SELECT runhub.attribute_payments(%s, %s)",
                                                        (project, since)).fetchone()[0])
                second.commit()
            except psycopg.Error as error:  # recorded, for the assertion below
                outcome_of_second.append(error)

        thread = threading.Thread(target=backfill_again)
        thread.start()
        for _ in range(600):  # until the second waits on the first's uncommitted credit (not a sleep: a condition)
            waiting = conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                                   (second_pid,)).fetchone()[0]
            if waiting:
                break
            thread.join(0.05)
        assert waiting, "the second backfill never waited for the first's credit"
        first.commit()
        thread.join(30)
        assert outcome_of_second == [0]
    finally:
        first.close()
        second.close()
    assert credit(conn, missed)["method"] == "cart_match"
    assert count_rows(conn, "workflow_attributions") == 1


def test_runhub_attribute_payments_credits_what_was_missed(conn, db_url):
    from click.testing import CliRunner

    from runhub_loader.cli import main as cli

    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    with attribution_off(conn):
        missed = pay(conn, project, "ann@shop.example", cart="cart-1")
    args = ["--database-url", db_url, "--log-format", "text", "attribute-payments", "--since", "2026-01-01"]
    first = CliRunner().invoke(cli, args + ["--project", str(project)])
    assert first.exit_code == 0 and "1 payment(s) newly credited in 1 project(s)" in first.output, first.output
    assert "progress=1/1" in first.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "\n0 payment(s) newly credited" in again.output, again.output
    assert credit(conn, missed)["method"] == "cart_match"


def test_changing_the_registry_window_never_recounts_a_past_run(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200), "bob@shop.example": ("cart-2", 99)},
                                       hours_ago=10)
    before = pay(conn, project, "ann@shop.example", cart="cart-1", hours_ago=1)
    conn.execute("""UPDATE runhub.actions SET outcome = jsonb_set(outcome, '{windowHours}', '2')
                     WHERE id = 'recover_abandoned'""")
    after = pay(conn, project, "bob@shop.example", cart="cart-2", hours_ago=1)  # 9 h after its mail
    assert credit(conn, before)["window_hours"] == credit(conn, after)["window_hours"] == 48
    assert outcome(conn, project, owner, run)["conversions"] == 2
    assert conn.execute("SELECT runhub._money_window_hours(outcome) FROM runhub.actions WHERE id = 'recover_abandoned'"
                        ).fetchone()[0] == 2, "new runs would take the new window"


# -- what is logged ---------------------------------------------------------------------------------

def test_the_log_tells_what_did_not_count_where_there_was_something_to_weigh(conn):
    """RAISE LOG reaches this session (client_min_messages = log): a credit is its own row and a
    payment from someone never mailed is most payments, so neither is logged; an ignored run link,
    another currency and mail that matched nothing are, with the reason explain_attribution gives."""
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    logged: list[dict] = []

    def on_notice(diag):
        text = diag.message_primary or ""
        if text.startswith("runhub ") and '"payment_attribution"' in text:
            logged.append(json.loads(text[len("runhub "):]))

    conn.add_notice_handler(on_notice)
    conn.execute("SET client_min_messages = log")

    def reasons_of(payment) -> list[tuple]:
        return [(e["reason"], (e.get("link") or {}).get("reason")) for e in logged if e["paymentEventId"] == payment]

    credited = pay(conn, project, "ann@shop.example", cart="cart-1")
    stranger = pay(conn, project, "nobody@shop.example", cart="cart-9")
    unmatched = pay(conn, project, "ann@shop.example", amount=9999, cart="cart-7")
    foreign = pay(conn, project, "ann@shop.example", currency="USD", cart="cart-1")
    bad_link = pay(conn, project, "nobody@shop.example", wid="not-a-uuid")
    conn.execute("RESET client_min_messages")
    assert credit(conn, credited) is not None
    assert reasons_of(credited) == [] and reasons_of(stranger) == []
    assert reasons_of(unmatched) == [("attribution.noMatch", None)]
    assert reasons_of(foreign) == [("attribution.currencyMismatch", None)]
    assert reasons_of(bad_link) == [("attribution.noMailInWindow", "attribution.link.malformed")]
