"""Helpers shared by the workflow tests (tests/db/test_workflows_*.py): a project ready for actions, events
stamped relative to now, the preview -> create_run -> process_runs flow, and connect() for real
concurrent sessions (one connection per session; waiting on them: helpers.db.wait_until, blocked_by)."""
from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

from runhub_loader.db.api import Api

from helpers.db import DEADLINE_SECONDS, ingest, new_project

# holdoutPercent 0: the tests of everything else mail every recipient (tests/db/test_holdouts.py
# tests the holdout groups, which the default of 10 % would draw at random in their runs).
SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}
PROMO = {"subject": "Winter sale", "content": "Everything -20% this week"}
# Every session gives up rather than hang the suite if something never releases.
SESSION_OPTIONS = "-c statement_timeout=60s -c lock_timeout=60s"


def connect(db_url, autocommit=True):
    return psycopg.connect(db_url, autocommit=autocommit, options=SESSION_OPTIONS)


# -- projects and events -----------------------------------------------------------------------

def ready_shop(conn, settings=None, **kwargs):
    """A shop ready for every action, as pgTAP's pg_temp.ready_shop: a project with the settings every
    action needs (or the given ones); returns (project, owner)."""
    project, owner = new_project(conn, **kwargs)
    Api(conn).update_project_settings(project, owner, SETTINGS if settings is None else settings)
    return project, owner


def add_member(conn, project, actor, role):
    """A new user with this role, added by actor (an owner, or an admin for admins and members)."""
    user = uuid.uuid4()
    Api(conn).add_member(project, actor, user, role)
    return user


def ago(hours: float = 0, base: dt.datetime | None = None) -> str:
    """An ISO 8601 instant `hours` before base (default: now), with an explicit UTC offset."""
    base = base or dt.datetime.now(dt.timezone.utc)
    return (base - dt.timedelta(hours=hours)).isoformat()


def checkout(conn, project, email, hours=1.0, cart=None, correlation="auto", amount=4200, name=None):
    """A checkout_started `hours` ago. correlation='auto' uses the cart id (or a fresh one)."""
    cart = cart or f"cart-{uuid.uuid4().hex[:8]}"
    customer = {"email": email} | ({"name": name} if name else {})
    body = {"type": "checkout_started", "occurredAt": ago(hours), "idempotencyKey": uuid.uuid4().hex,
            "customer": customer, "amountCents": amount, "currency": "EUR", "payload": {"cartId": cart}}
    if correlation == "auto":
        body["correlationId"] = cart
    elif correlation is not None:
        body["correlationId"] = correlation
    ingest(conn, project, body)
    return cart


def signup(conn, project, email, hours=1.0):
    ingest(conn, project, {"type": "user_signed_up", "occurredAt": ago(hours), "idempotencyKey": uuid.uuid4().hex,
                           "customer": {"email": email}})


def checkouts(conn, project, n, prefix="c", hours=1.0):
    """n customers with a checkout each, e-mails <prefix>00@ex.com ...; returns the e-mails."""
    emails = [f"{prefix}{i:02d}@ex.com" for i in range(n)]
    for e in emails:
        checkout(conn, project, e, hours=hours)
    return emails


# -- the workflow API --------------------------------------------------------------------------

def preview(conn, project, actor, action, params=None) -> dict:
    return Api(conn).preview(project, actor, action, params or {})


def create_run(conn, project, actor, action, key, params=None, preview_id=None) -> dict:
    return Api(conn).create_run(project, actor, action, key, params or {}, preview=preview_id)


def process_runs(conn, n=10) -> int:
    return Api(conn).process_runs(n)


def get_run(conn, project, actor, run) -> dict:
    return Api(conn).get_run(project, actor, run)


def run_status(conn, run) -> str:
    return conn.execute("SELECT status FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0]


def run_row(conn, run) -> dict:
    cur = conn.execute("SELECT * FROM runhub.workflow_runs WHERE id = %s", (run,))
    row = cur.fetchone()
    return None if row is None else dict(zip([d.name for d in cur.description], row))


def runs_of(conn, project) -> list:
    """The project's run ids, in a stable order (heap order changes as rows are updated)."""
    return [r[0] for r in conn.execute("SELECT id FROM runhub.workflow_runs WHERE project_id = %s ORDER BY id",
                                       (project,))]


def recipients(conn, run) -> list[tuple]:
    """(email, name, status, link) of a run's recipients, in e-mail order (the database's)."""
    return conn.execute("SELECT email, name, status, link FROM runhub.workflow_run_recipients"
                        " WHERE run_id = %s ORDER BY email", (run,)).fetchall()


def outbox(conn, run) -> list[tuple]:
    """(to_email, status, template, message_id, recipient e-mail) of a run's messages, by address."""
    return conn.execute("SELECT o.to_email, o.status, o.template, o.message_id, r.email FROM runhub.outbox o"
                        " LEFT JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id AND r.run_id = o.run_id"
                        " WHERE o.run_id = %s ORDER BY o.to_email", (run,)).fetchall()


def snapshot(conn) -> dict:
    """Row counts of everything a workflow call could write."""
    tables = ["workflow_runs", "workflow_run_recipients", "outbox", "previews", "customers", "suppressions",
              "business_events", "project_members"]
    return {t: conn.execute(f"SELECT count(*) FROM runhub.{t}").fetchone()[0] for t in tables}


def attempt(fn, *args, **kwargs):
    """('ok', value) or ('err', sqlstate, i18n key, detail) — for collecting results from threads."""
    try:
        return ("ok", fn(*args, **kwargs))
    except psycopg.Error as err:
        detail = err.diag.message_detail
        try:
            detail = json.loads(detail) if detail else None
        except ValueError:
            pass
        return ("err", err.sqlstate, err.diag.message_primary, detail)


# -- runhub's clock ----------------------------------------------------------------------------

def clock_minute(conn) -> int:
    """The minute since the epoch on runhub's clock (runhub._now()): the rate limiter's window. Tests
    put the clock at the start of a fresh minute with the db_clock fixture / helpers.db.set_clock."""
    return conn.execute("SELECT floor(extract(epoch FROM runhub._now()) / 60)::bigint").fetchone()[0]


def race(sessions, call):
    """Run call(i, session) in every session at once (released by one barrier); each one's attempt(),
    in order."""
    barrier = threading.Barrier(len(sessions), timeout=DEADLINE_SECONDS)

    def worker(i):
        barrier.wait()
        return attempt(call, i, sessions[i])

    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        return list(pool.map(worker, range(len(sessions))))
