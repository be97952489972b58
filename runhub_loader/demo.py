"""The demo shop: weeks of checkouts, payments, leads and signups, loaded through the public API.

The same calls a real shop's back end would make, so a re-run is idempotent."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import psycopg

from .db import queries
from .db.api import Api

DEMO_OWNER = uuid.UUID("00000000-0000-4000-8000-000000000001")
DEMO_NAME = "Demo Coffee Roasters"
CUSTOMERS = [
    ("amira@example.com", "Amira Haddad", "ar"), ("ben@example.com", "Ben Carter", "en"),
    ("chloe@example.com", "Chloé Martin", "fr"), ("diego@example.com", "Diego López", "es"),
    ("eva@example.com", "Eva Schmidt", "de"), ("farid@example.com", "Farid Nasser", "ar"),
    ("grace@example.com", "Grace Kim", "en"), ("hugo@example.com", "Hugo Bernard", "fr"),
    ("ines@example.com", "Inés García", "es"), ("jonas@example.com", "Jonas Weber", "de"),
    ("kate@example.com", "Kate O'Neill", "en"), ("liam@example.com", "Liam Murphy", "en"),
]


def demo_events(now: datetime, days: int = 21) -> list[dict]:
    """The last `days` days of a small shop. Each calendar day's events depend on that day alone,
    so a re-run (even days later) ingests only what is new."""
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    events = []
    for offset in range(days + 1):
        day = first_day + timedelta(days=offset)
        events += [e for e in _day_events(day) if datetime.fromisoformat(e["occurredAt"]) <= now]
    return events


def _day_events(day: datetime) -> list[dict]:
    rng = random.Random(day.strftime("%Y%m%d"))
    stamp = day.strftime("%Y%m%d")
    events = []
    for n in range(rng.randint(2, 6)):
        email, name, locale = rng.choice(CUSTOMERS)
        customer = {"email": email, "name": name, "locale": locale}
        at = day + timedelta(minutes=rng.randint(0, 24 * 60 - 1))
        cart = f"cart-{stamp}-{n}"
        amount = rng.choice([1800, 2400, 3600, 5200, 8900])
        events.append(_event("checkout_started", at, f"{cart}:checkout", cart, customer, amount,
                             {"cartId": cart, "items": rng.randint(1, 4)}))
        if rng.random() < 0.6:  # most checkouts convert within a couple of hours
            events.append(_event("payment_succeeded", at + timedelta(minutes=rng.randint(1, 120)),
                                 f"{cart}:payment", cart, customer, amount, {"cartId": cart}))
    if rng.random() < 0.7:
        email, name, locale = rng.choice(CUSTOMERS)
        customer = {"email": email, "name": name, "locale": locale}
        at = day + timedelta(hours=rng.randint(8, 20))
        events.append(_event("lead_created", at, f"lead-{stamp}", None, customer, None, {"source": "form"}))
        events.append(_event("user_signed_up", at + timedelta(minutes=5), f"signup-{stamp}", None, customer, None, {}))
    return events


def _event(kind, at, key, correlation, customer, amount, payload) -> dict:
    event = {"type": kind, "occurredAt": at.isoformat(), "idempotencyKey": key,
             "customer": customer, "payload": payload}
    if correlation:
        event["correlationId"] = correlation
    if amount is not None:
        event.update(amountCents=amount, currency="USD")
    return event


def load(database_url: str, now: datetime | None = None) -> dict:
    """Create the demo shop (once) and ingest its events; returns what is there."""
    now = now or datetime.now(timezone.utc)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(queries.DEMO_PROJECT_ID, (DEMO_OWNER, DEMO_NAME)).fetchone()
        api = Api(conn)
        project = row[0] if row else api.create_project(DEMO_NAME, DEMO_OWNER, "America/New_York", "USD", "en", "coffee")
        api.update_project_settings(project, DEMO_OWNER, {"shopUrl": "https://coffee.example",
                                                  "integrations": ["payments", "email"],
                                                  "dailyDigestEnabled": True, "dailyDigestHour": 8,
                                                  "dailyDigestRecipient": "owner@coffee.example",
                                                  # a day's recovery is a cart or two: holding one out
                                                  # would leave the demo nothing to show
                                                  "holdoutPercent": 0})
        inserted = 0
        for event in demo_events(now):
            result = api.ingest_event(project, event)
            inserted += result["inserted"]
        conn.commit()
        counts = dict(conn.execute(queries.DEMO_EVENT_COUNTS, (project,)).fetchall())
        actions = api.list_actions(project, DEMO_OWNER)
        previews = {a["id"]: api.preview(project, DEMO_OWNER, a["id"], DEMO_PARAMS.get(a["id"], {})) for a in actions}
        conn.commit()
        run = _run_recovery(conn, project, previews.get("recover_abandoned"), now)
        if run and "id" in run:
            run["outcome"] = _customer_comes_back(conn, project, run["id"])
        digest = conn.execute(queries.DEMO_YESTERDAYS_DIGEST, (project,)).fetchone()[0]
    return {"project": str(project), "name": DEMO_NAME, "inserted": inserted, "events": counts,
            "actions": actions, "previews": previews, "run": run, "digest": digest}


def _run_recovery(conn, project, preview, now: datetime) -> dict | None:
    """Run today's recovery (one a day: the idempotency key is the date) and execute it now, as the
    daemon or the minute sweep would."""
    if not preview:
        return None
    try:  # today's run again (the same key) even while the preview is blocked, e.g. by its cooldown
        created = Api(conn).create_run(project, DEMO_OWNER, "recover_abandoned", f"demo-recovery-{now:%Y-%m-%d}", {},
                                       preview=preview["previewId"])
    except psycopg.Error:
        conn.rollback()
        if "blocked" not in preview:
            raise
        return {"blocked": preview["blocked"]["reason"]}
    conn.commit()
    Api(conn).process_runs(10)
    conn.commit()
    run = Api(conn).get_run(project, DEMO_OWNER, created["runId"])
    links = conn.execute(queries.DEMO_RUN_LINKS, (created["runId"],)).fetchall()
    return {**run, "deduplicated": created["deduplicated"], "links": links}


def _customer_comes_back(conn, project, run_id: str) -> dict | None:
    """Once the day's recovery mail went out, its first recipient follows the link and pays (once):
    the shop's payment webhook carries the run id from the checkout's metadata, and the payment is
    credited to the run. Returns the run's Outcome."""
    sent = conn.execute(queries.DEMO_FIRST_SENT_RECIPIENT, (run_id,)).fetchone()
    if sent:
        email, cart, amount, currency = sent
        Api(conn).ingest_event(project, {
            "type": "payment_succeeded", "occurredAt": datetime.now(timezone.utc).isoformat(),
            "idempotencyKey": f"{cart}:recovered:{run_id}", "correlationId": cart,
            "customer": {"email": email}, "amountCents": amount, "currency": currency,
            "payload": {"cartId": cart, "checkoutMetadata": {"wid": run_id}}})
        conn.commit()
    return Api(conn).workflow_outcome(project, DEMO_OWNER, run_id)


DEMO_PARAMS = {"send_promo": {"subject": "20% off beans this week", "content": "Fresh roasts, 20% off.",
                              "segmentation": "recent_30d"}}
