"""Shared fixtures: a real PostgreSQL 15 cluster (pg_cron, plpython3u), runhub deployed once into a
template database, and a fresh clone of it for every test (pytest-postgresql's noproc factory).

`scripts/test` starts the cluster and exports RUNHUB_TEST_HOME; run alone, pytest starts its own.
"""
from __future__ import annotations

import atexit
import copy
import json
import os
import stat
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from pytest_postgresql import factories

from runhub_loader.db.deploy import deploy
from runhub_loader.db.embedded import Cluster

REPO = Path(__file__).resolve().parent.parent


def _test_cluster() -> Cluster:
    home = os.environ.get("RUNHUB_TEST_HOME")
    if home:
        return Cluster(Path(home))
    home = Path(tempfile.mkdtemp(prefix="runhub-pytest-"))
    home.chmod(0o755)
    cluster = Cluster(home)
    cluster.start(fast=True)
    atexit.register(cluster.destroy)
    os.environ["RUNHUB_TEST_HOME"] = str(home)
    return cluster


CLUSTER = _test_cluster()


def _deploy_template(host, port, user, dbname, password=None, **_):
    deploy(CLUSTER.url(dbname), schedule_cron=False)


postgresql_noproc = factories.postgresql_noproc(
    host=str(CLUSTER.socketdir), port=CLUSTER.port, user="postgres", dbname="runhub_test",
    load=[_deploy_template])
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return CLUSTER


@pytest.fixture
def db_url(postgresql) -> str:
    """URL of this test's own freshly deployed database."""
    return CLUSTER.url(postgresql.info.dbname)


@pytest.fixture
def conn(db_url):
    """An autocommit connection to this test's database, as the deploying superuser."""
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def fresh_db(cluster):
    """An empty database with nothing deployed, dropped afterwards (with its cron jobs)."""
    name = f"runhub_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield cluster.url(name)
    from runhub_loader.db.cron import unschedule_cron_jobs

    unschedule_cron_jobs(cluster.url(name))
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def login_as(db_url, conn):
    """login_as('runhub_app') -> the URL of a fresh LOGIN role granted only that runhub role, for
    this test's database: calls then go through the grants a deployment gives that component.
    Roles are cluster-wide, so each is named uniquely and dropped afterwards."""
    made = []

    def make(*granted: str) -> str:
        name = f"login_{'_'.join(g.removeprefix('runhub_') for g in granted)}_{uuid.uuid4().hex[:8]}"
        conn.execute(f'CREATE ROLE "{name}" LOGIN')
        for role in granted:
            conn.execute(f'GRANT "{role}" TO "{name}"')
        made.append(name)
        return make_conninfo(db_url, user=name)

    yield make
    for name in made:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(f'DROP ROLE "{name}"')


# -- calling the API ---------------------------------------------------------------------------

def new_project(conn, owner=None, timezone="Europe/Paris", currency="EUR", locale="en", industry=None):
    owner = owner or uuid.uuid4()
    project = conn.execute("SELECT runhub.create_project('Shop', %s, %s, %s, %s, %s)",
                           (owner, timezone, currency, locale, industry)).fetchone()[0]
    return project, owner


def ingest(conn, project, event: dict) -> dict:
    return conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(event))).fetchone()[0]


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

def set_db_clock(conn, second: float = 0.0) -> int:
    """Shift runhub's clock (runhub._now(): clock_timestamp() + runhub.clock_offset, which only the
    owner and superusers may change) so that it reads `second` seconds into the next minute on it:
    a fresh minute for the create_run rate limit, with 60 - second seconds of it left. Needs a
    superuser connection; on an autocommit one every session of the database sees it at once.
    Returns that minute since the epoch (as db_minute counts). Tests set it rather than sleep."""
    return conn.execute(
        """WITH t AS (SELECT floor(extract(epoch FROM runhub._now()) / 60)::bigint + 1 AS minute)
           INSERT INTO runhub.clock_offset (shift)
           SELECT to_timestamp(t.minute * 60 + %s::float8) - clock_timestamp() FROM t
           ON CONFLICT (singleton) DO UPDATE SET shift = excluded.shift
           RETURNING (SELECT t.minute FROM t)""", (second,)).fetchone()[0]


def reset_db_clock(conn) -> None:
    """runhub's clock back to the real time (no offset, as in production)."""
    conn.execute("UPDATE runhub.clock_offset SET shift = interval '0'")


@pytest.fixture
def db_clock(conn):
    """db_clock(second=0) -> minute: set_db_clock on this test's database; the clock is put back
    to the real time when the test ends."""
    yield lambda second=0.0: set_db_clock(conn, second)
    reset_db_clock(conn)


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
    """Commits that survive a crash, as in production: the test cluster runs with
    synchronous_commit off (a commit there may still be in the WAL buffers when the server dies).
    For this database's new sessions and this one."""
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET synchronous_commit = on')
    conn.execute("SET synchronous_commit = on")


def blocked_by(monitor, blocker_pid: int) -> set[int]:
    """Backends of this database waiting for a heavyweight lock held by blocker_pid."""
    rows = monitor.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        "   AND %s = ANY (pg_blocking_pids(pid))", (blocker_pid,)).fetchall()
    return {r[0] for r in rows}


# -- building inputs, and files ----------------------------------------------------------------

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


def file_mode(path) -> int:
    """Permission bits of path itself (a symlink's own, not its target's)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022():
    """The usual umask, which would make a plain mkdir 755 and a plain file 644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)
