"""Helpers for the attribution tests: runs whose mail really went out (through the sender's own
functions), sent-times moved into the past, and payments."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

from runhub_loader.db.api import Api

from helpers.db import ingest
from helpers.workflows import PROMO, ago, checkout, create_run, preview, process_runs, ready_shop


def deliver(conn, run, worker="w-test") -> list[int]:
    """Claim, start and record as sent every message of the run (as the sender does after a 250);
    returns their outbox ids."""
    api = Api(conn)
    ids = [m["id"] for m in api.claim_messages(worker, 1000, 120) if m["runId"] == str(run)]
    api.start_messages(worker, ids)
    api.record_sent_many(worker, ids, ["250 ok"] * len(ids))
    return ids


def sent_hours_ago(conn, run, hours: float, email: str | None = None) -> None:
    """Move the run's sent mail (or one address's) `hours` into the past, as if executed and sent then."""
    params = {"secs": hours * 3600, "run": run, "email": email}
    conn.execute("""UPDATE runhub.outbox o SET sent_at = now() - make_interval(secs => %(secs)s)
                     FROM runhub.workflow_run_recipients rc
                    WHERE rc.id = o.recipient_id AND rc.run_id = %(run)s AND o.status = 'sent'
                      AND (%(email)s::text IS NULL OR rc.email = %(email)s)""", params)
    conn.execute("""UPDATE runhub.workflow_run_recipients SET created_at = now() - make_interval(secs => %(secs)s)
                     WHERE run_id = %(run)s AND (%(email)s::text IS NULL OR email = %(email)s)""", params)


def recovery_run(conn, carts: dict[str, tuple[str, int]], project=None, owner=None, key=None, hours_ago=1.0):
    """A recovery run to {email: (cart, amountCents)}, its mail sent `hours_ago`; returns (project, owner, run)."""
    if project is None:
        project, owner = ready_shop(conn)
    for email, (cart, amount) in carts.items():
        checkout(conn, project, email, hours=2, cart=cart, amount=amount)
    preview(conn, project, owner, "recover_abandoned")
    run = create_run(conn, project, owner, "recover_abandoned", key or uuid.uuid4().hex)["runId"]
    process_runs(conn)
    deliver(conn, run)
    sent_hours_ago(conn, run, hours_ago)
    return project, owner, run


def promo_run(conn, emails: list[str], project=None, owner=None, hours_ago=1.0):
    """A promotion to customers seen lately, sent `hours_ago`; returns (project, owner, run)."""
    if project is None:
        project, owner = ready_shop(conn)
    for email in emails:
        ingest(conn, project, {"type": "lead_created", "occurredAt": ago(3), "idempotencyKey": uuid.uuid4().hex,
                               "customer": {"email": email}})
    preview(conn, project, owner, "send_promo", PROMO)
    run = create_run(conn, project, owner, "send_promo", uuid.uuid4().hex, PROMO)["runId"]
    process_runs(conn)
    deliver(conn, run)
    sent_hours_ago(conn, run, hours_ago)
    return project, owner, run


def pay(conn, project, email=None, amount=4200, currency="EUR", hours_ago=0.5, cart=None, wid=None,
        correlation=None, key=None, metadata=True) -> int:
    """Ingest a payment_succeeded `hours_ago`; returns its event id."""
    payload = {}
    if cart is not None:
        payload["cartId"] = cart
    if wid is not None:
        payload.update({"checkoutMetadata": {"wid": wid}} if metadata else {"wid": wid})
    body = {"type": "payment_succeeded", "occurredAt": ago(hours_ago), "idempotencyKey": key or uuid.uuid4().hex,
            "amountCents": amount, "currency": currency, "payload": payload}
    if email is not None:
        body["customer"] = {"email": email}
    if correlation is not None:
        body["correlationId"] = correlation
    return ingest(conn, project, body)["eventId"]


def credit(conn, payment) -> dict | None:
    """The payment's attribution row as a dict, or None."""
    cur = conn.execute("SELECT * FROM runhub.workflow_attributions WHERE payment_event_id = %s", (payment,))
    row = cur.fetchone()
    return None if row is None else dict(zip([d.name for d in cur.description], row))


def explain(conn, project, actor, payment) -> dict:
    return Api(conn).explain_attribution(project, actor, payment)


def outcome(conn, project, actor, run) -> dict | None:
    return Api(conn).workflow_outcome(project, actor, run)


@contextmanager
def attribution_off(conn):
    """Payments stored inside it are not examined (the trigger off, as after a restore): for the backfill."""
    conn.execute("ALTER TABLE runhub.business_events DISABLE TRIGGER business_events_attribute_payment")
    try:
        yield
    finally:
        conn.execute("ALTER TABLE runhub.business_events ENABLE TRIGGER business_events_attribute_payment")
