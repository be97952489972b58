"""Idempotent ingest under real concurrency: many sessions, each on its own connection, ingesting
the same event. Synchronisation is by barrier and by watching pg_locks/pg_stat_activity for the
waiting sessions, never by sleeping for a guessed duration."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, wait

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.db import DEADLINE_SECONDS, blocked_by, count_rows, event, new_project, wait_until

N = 32
# Every session gives up rather than hang the suite if something never releases.
SESSION_OPTIONS = "-c statement_timeout=60s -c lock_timeout=60s"


def _connect(db_url, autocommit=True):
    return psycopg.connect(db_url, autocommit=autocommit, options=SESSION_OPTIONS)


def _ingest(conn, project, body):
    return conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(body))).fetchone()[0]


def _rows_for_key(conn, project, key):
    return conn.execute("SELECT id FROM runhub.business_events WHERE project_id = %s AND idempotency_key = %s",
                        (project, key)).fetchall()




@pytest.fixture
def sessions(db_url):
    """N autocommit connections, opened up front so connecting is not part of the race."""
    conns = [_connect(db_url) for _ in range(N)]
    yield conns
    for c in conns:
        c.close()


@pytest.mark.parametrize("round_", range(3))
def test_same_event_from_32_sessions_at_once_is_stored_once(conn, sessions, round_):
    project, _ = new_project(conn)
    body = event("payment_succeeded", key=f"pay-{uuid.uuid4().hex}", amountCents=1299, currency="EUR",
                 customer={"email": "ann@example.com"})
    barrier = threading.Barrier(N, timeout=DEADLINE_SECONDS)

    def worker(c):
        barrier.wait()
        return _ingest(c, project, body)

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(worker, sessions))

    rows = _rows_for_key(conn, project, body["idempotencyKey"])
    assert len(rows) == 1
    assert count_rows(conn, "business_events") == 1
    assert sum(r["inserted"] for r in results) == 1, results
    assert {r["eventId"] for r in results} == {rows[0][0]}


def test_different_projects_same_key_concurrently_each_store_one(conn, sessions):
    """Idempotency is per project: the same key in two projects is two events."""
    projects = [new_project(conn)[0], new_project(conn)[0]]
    body = event(key="shared-key")
    barrier = threading.Barrier(N, timeout=DEADLINE_SECONDS)

    def worker(i):
        barrier.wait()
        return projects[i % 2], _ingest(sessions[i], projects[i % 2], body)

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(worker, range(N)))

    for project in projects:
        rows = _rows_for_key(conn, project, "shared-key")
        mine = [r for p, r in results if p == project]
        assert len(rows) == 1
        assert sum(r["inserted"] for r in mine) == 1
        assert {r["eventId"] for r in mine} == {rows[0][0]}
    assert count_rows(conn, "business_events") == 2


def _start_waiters(pool, sessions, project, body):
    return [pool.submit(_ingest, c, project, body) for c in sessions]


def _hold_first_write(db_url, conn, project, body):
    """Open a transaction that ingested body and has not committed; returns (connection, result)."""
    first = _connect(db_url, autocommit=False)
    result = _ingest(first, project, body)
    assert result["inserted"] is True
    # Uncommitted: nobody else sees it yet.
    assert _rows_for_key(conn, project, body["idempotencyKey"]) == []
    return first, result


def _block_waiters(conn, first, sessions, futures):
    first_pid = first.info.backend_pid
    waiter_pids = {c.info.backend_pid for c in sessions}
    wait_until(lambda: blocked_by(conn, first_pid) >= waiter_pids,
                f"{len(waiter_pids)} sessions to block on the first writer's transaction")
    # They block on the first writer's transaction id, and none has returned.
    waiting = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_locks h ON h.transactionid = l.transactionid"
        " WHERE l.locktype = 'transactionid' AND NOT l.granted AND h.granted AND h.pid = %s"
        "   AND l.pid = ANY (%s)", (first_pid, list(waiter_pids))).fetchone()[0]
    assert waiting == len(waiter_pids)
    assert not any(f.done() for f in futures)


def _race_waiters_against_first_writer(db_url, conn, sessions, project, body, finish):
    """Hold a first write open, queue N waiters behind it, then finish(first) and collect them."""
    first, first_result = _hold_first_write(db_url, conn, project, body)
    try:
        with ThreadPoolExecutor(max_workers=N) as pool:
            futures = _start_waiters(pool, sessions, project, body)
            _block_waiters(conn, first, sessions, futures)
            finish(first)
            done, not_done = wait(futures, timeout=DEADLINE_SECONDS)
            assert not not_done
            return first_result, [f.result() for f in futures]
    finally:
        first.close()


def test_waiters_see_the_first_writers_event_once_it_commits(db_url, conn, sessions):
    project, _ = new_project(conn)
    body = event("lead_created", key=f"lead-{uuid.uuid4().hex}")
    first_result, results = _race_waiters_against_first_writer(
        db_url, conn, sessions, project, body, lambda first: first.commit())

    assert results == [{"eventId": first_result["eventId"], "inserted": False}] * N
    assert _rows_for_key(conn, project, body["idempotencyKey"]) == [(first_result["eventId"],)]
    assert count_rows(conn, "business_events") == 1


def test_exactly_one_waiter_inserts_when_the_first_writer_rolls_back(db_url, conn, sessions):
    project, _ = new_project(conn)
    body = event("lead_created", key=f"lead-{uuid.uuid4().hex}")
    first_result, results = _race_waiters_against_first_writer(
        db_url, conn, sessions, project, body, lambda first: first.rollback())

    winners = [r for r in results if r["inserted"]]
    assert len(winners) == 1, results
    rows = _rows_for_key(conn, project, body["idempotencyKey"])
    assert rows == [(winners[0]["eventId"],)]
    assert rows[0][0] != first_result["eventId"], "the rolled-back id must not be reported"
    assert {r["eventId"] for r in results} == {rows[0][0]}
    assert count_rows(conn, "business_events") == 1


def test_waiters_in_explicit_transactions_get_the_committed_id(db_url, conn):
    """Waiters that are themselves inside open transactions (read committed) also see the winner."""
    project, _ = new_project(conn)
    body = event("signup", key=f"signup-{uuid.uuid4().hex}")
    waiters = [_connect(db_url, autocommit=False) for _ in range(4)]
    try:
        for w in waiters:  # each takes its snapshot-bearing transaction before the first write exists
            w.execute("SELECT count(*) FROM runhub.business_events").fetchone()
        first, first_result = _hold_first_write(db_url, conn, project, body)
        try:
            with ThreadPoolExecutor(max_workers=len(waiters)) as pool:
                futures = _start_waiters(pool, waiters, project, body)
                _block_waiters(conn, first, waiters, futures)
                first.commit()
                done, not_done = wait(futures, timeout=DEADLINE_SECONDS)
                assert not not_done
                results = [f.result() for f in futures]
        finally:
            first.close()
        for w in waiters:
            w.commit()
    finally:
        for w in waiters:
            w.close()
    assert results == [{"eventId": first_result["eventId"], "inserted": False}] * len(waiters)
    assert count_rows(conn, "business_events") == 1
