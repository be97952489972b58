"""Calling runhub's API on a test database: projects, events, the error contract, row counts,
runhub's clock, and waiting on real concurrent sessions. (The fixtures that give a test its database
are in tests/db/conftest.py.)"""
from __future__ import annotations

import copy
import json
import time
import uuid

import pytest

from runhub_loader.db.api import Api

# -- calling the API ---------------------------------------------------------------------------

def new_project(conn, owner=None, timezone="Europe/Paris", currency="EUR", locale="en", industry=None):
    owner = owner or uuid.uuid4()
    project = Api(conn).create_project("Shop", owner, timezone, currency, locale, industry)
    return project, owner


def ingest(conn, project, event: dict) -> dict:
    return Api(conn).ingest_event(project, event)


def event(kind="checkout_started", at="2026-11-20T10:00:00Z", key=None, **extra) -> dict:
    body = {"type": kind, "occurredAt": at, "idempotencyKey": key or uuid.uuid4().hex}
    body.update(extra)
    return body


def assert_refused(excinfo, sqlstate: str, key: str) -> dict:
    """The error contract: SQLSTATE, MESSAGE = i18n key, DETAIL = JSON params, HINT = English."""
    err = excinfo.value
    assert err.sqlstate == sqlstate, (err.sqlstate, err.diag.message_primary)
    assert err.diag.message_primary == key
    assert err.diag.message_hint, "every refusal carries a plain-English hint"
    return json.loads(err.diag.message_detail)


def count_rows(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM runhub.{table}").fetchone()[0]


# -- runhub's clock ----------------------------------------------------------------------------

def set_clock(conn, second: float = 0.0) -> int:
    """Shift runhub's clock (runhub._now(): clock_timestamp() + runhub.clock_offset, which only the
    owner and superusers may change) so that it reads `second` seconds into the next minute on it:
    a fresh minute for the create_run rate limit, with 60 - second seconds of it left. Needs a
    superuser connection; on an autocommit one every session of the database sees it at once.
    Returns that minute since the epoch (as clock_minute counts). Tests set it rather than sleep."""
    return conn.execute(
        """WITH t AS (SELECT floor(extract(epoch FROM runhub._now()) / 60)::bigint + 1 AS minute)
           INSERT INTO runhub.clock_offset (shift)
           SELECT to_timestamp(t.minute * 60 + %s::float8) - clock_timestamp() FROM t
           ON CONFLICT (singleton) DO UPDATE SET shift = excluded.shift
           RETURNING (SELECT t.minute FROM t)""", (second,)).fetchone()[0]


def reset_clock(conn) -> None:
    """runhub's clock back to the real time (no offset, as in production)."""
    conn.execute("UPDATE runhub.clock_offset SET shift = interval '0'")


# -- waiting on real concurrent sessions ----------------------------------------------------------

DEADLINE_SECONDS = 30.0


def wait_until(condition, what: str, deadline_seconds: float = DEADLINE_SECONDS):
    """Poll condition() until it holds; fail (not hang) after the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)  # a polling interval, not a synchronisation guess


def durable_commits(conn) -> None:
    """Commits that survive a crash, as in production: the shared test cluster runs with
    synchronous_commit off (a commit there may still be in the WAL buffers when the server dies).
    For this database's new sessions and this one. (The fault tests' own cluster, fault_cluster, is
    not a fast one: there this only says what the test relies on.)"""
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET synchronous_commit = on')
    conn.execute("SET synchronous_commit = on")


def blocked_by(monitor, blocker_pid: int) -> set[int]:
    """Backends of this database waiting for a heavyweight lock held by blocker_pid."""
    rows = monitor.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        "   AND %s = ANY (pg_blocking_pids(pid))", (blocker_pid,)).fetchall()
    return {r[0] for r in rows}


# -- building inputs ---------------------------------------------------------------------------

DELETE = object()  # with_field: remove the field


def with_field(body: dict, path: str, value) -> dict:
    """body with path (e.g. 'customer.email') set to value, or removed when value is DELETE."""
    body = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    node = body
    for name in parents:
        node = node[name]
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body
