"""Workflow execution leases across real sessions: claim, expiry and reclaim by a second worker,
heartbeats, parallel process_runs with SKIP LOCKED, no re-execution of an executed run, cancel
against an open execution, retries of an execution that raises, and stale runs. Every worker is its
own connection; ordering comes from committed state and pg_stat_activity, never from sleeps."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from helpers.db import DEADLINE_SECONDS, assert_refused, blocked_by, wait_until
from helpers.workflows import (attempt, checkouts, connect, create_run, get_run, outbox, preview, process_runs,
                               ready_shop, recipients, run_row, signup)

RECOVER = "recover_abandoned"


def _queued_run(conn, n=3, prefix="c"):
    """(project, owner, run): a queued recover_abandoned run for n customers."""
    project, owner = ready_shop(conn)
    checkouts(conn, project, n, prefix=prefix)
    preview(conn, project, owner, RECOVER)
    return project, owner, create_run(conn, project, owner, RECOVER, "k")["runId"]


def _claim(c, worker, n=10, lease=300):
    return [str(r[0]) for r in c.execute("SELECT runhub.claim_runs(%s, %s, %s)", (worker, n, lease)).fetchall()]


def _execute(c, run, worker):
    return c.execute("SELECT runhub.execute_run(%s, %s)", (run, worker)).fetchone()[0]


def _heartbeat(c, run, worker, lease=300):
    return c.execute("SELECT runhub.heartbeat_run(%s, %s, %s)", (run, worker, lease)).fetchone()[0]


def _written(conn, run):
    return len(recipients(conn, run)), len(outbox(conn, run))


@pytest.fixture
def workers(db_url):
    """Two workers, A and B, each its own autocommit session."""
    a, b = connect(db_url), connect(db_url)
    yield a, b
    a.close()
    b.close()


def test_expired_lease_is_reclaimed_and_the_first_worker_writes_nothing(conn, workers):
    a, b = workers
    project, owner, run = _queued_run(conn, 3)

    assert _claim(a, "worker-a") == [run]
    claimed = run_row(conn, run)
    assert (claimed["status"], claimed["attempts"], claimed["lease_owner"]) == ("running", 1, "worker-a")
    assert claimed["started_at"] is not None and claimed["lease_expires_at"] is not None

    # While A's lease is live, B gets nothing and cannot execute A's run.
    assert _claim(b, "worker-b") == []
    assert _execute(b, run, "worker-b") == "lease_lost"
    assert process_runs(b) == 0
    assert _written(conn, run) == (0, 0)

    conn.execute("UPDATE runhub.workflow_runs SET lease_expires_at = clock_timestamp() - interval '1 second'"
                 " WHERE id = %s", (run,))
    assert _heartbeat(a, run, "worker-a") is False, "an expired lease cannot be renewed"

    assert _claim(b, "worker-b") == [run]
    reclaimed = run_row(conn, run)
    assert (reclaimed["attempts"], reclaimed["lease_owner"]) == (2, "worker-b")
    assert reclaimed["started_at"] == claimed["started_at"], "the run started once"

    assert _execute(a, run, "worker-a") == "lease_lost"
    assert _heartbeat(a, run, "worker-a") is False
    assert _written(conn, run) == (0, 0)
    assert run_row(conn, run)["lease_owner"] == "worker-b"

    assert _execute(b, run, "worker-b") == "running"
    assert _written(conn, run) == (3, 3)
    done = run_row(conn, run)
    assert done["executed_at"] is not None and done["lease_owner"] is None and done["lease_expires_at"] is None

    # Nobody executes it again.
    assert _execute(a, run, "worker-a") == "lease_lost"
    assert _execute(b, run, "worker-b") == "lease_lost"
    assert _claim(a, "worker-a") == [] and process_runs(b) == 0
    assert _written(conn, run) == (3, 3)


@pytest.mark.slow  # ~5 s: waits for a real 5 s lease to lapse
def test_a_short_lease_expires_on_the_clock_and_is_reclaimed(conn, workers):
    a, b = workers
    project, owner, run = _queued_run(conn, 2)
    assert _claim(a, "worker-a", lease=5) == [run]  # the shortest lease claim_runs accepts
    assert _claim(b, "worker-b") == []
    wait_until(lambda: conn.execute("SELECT lease_expires_at < clock_timestamp() FROM runhub.workflow_runs"
                                    " WHERE id = %s", (run,)).fetchone()[0],
               "worker A's 5 s lease to expire", deadline_seconds=20)
    assert _claim(b, "worker-b") == [run]
    assert _execute(a, run, "worker-a") == "lease_lost"
    assert _execute(b, run, "worker-b") == "running"
    assert _written(conn, run) == (2, 2)
    assert run_row(conn, run)["attempts"] == 2


def test_heartbeat_extends_only_the_owners_live_lease(conn, workers):
    a, b = workers
    project, owner, run = _queued_run(conn, 2)
    assert _heartbeat(a, run, "worker-a") is False, "a queued run has no lease to extend"
    assert _claim(a, "worker-a", lease=60) == [run]
    first = run_row(conn, run)

    assert _heartbeat(b, run, "worker-b", 3600) is False
    assert run_row(conn, run)["lease_expires_at"] == first["lease_expires_at"]
    assert run_row(conn, run)["lease_owner"] == "worker-a"

    assert _heartbeat(a, run, "worker-a", 3600) is True
    extended = run_row(conn, run)
    assert extended["lease_expires_at"] > first["lease_expires_at"]
    assert extended["last_heartbeat_at"] >= first["last_heartbeat_at"]
    assert extended["lease_owner"] == "worker-a"

    assert _execute(a, run, "worker-a") == "running"
    assert _heartbeat(a, run, "worker-a") is False, "an executed run holds no lease"
    assert run_row(conn, run)["lease_expires_at"] is None


@pytest.mark.parametrize("lease", [None, 0, -60])
def test_heartbeat_with_a_bad_lease_length_is_refused_and_never_drops_the_lease(conn, workers, lease):
    """No input, however malformed, raises anything but a PTxyz error (claim_runs refuses leases
    outside 5-86400 s with PT400); and a heartbeat never leaves its worker with an expired lease."""
    a, _ = workers
    project, owner, run = _queued_run(conn, 1)
    assert _claim(a, "worker-a") == [run]
    before = run_row(conn, run)
    result = attempt(_heartbeat, a, run, "worker-a", lease)
    after = run_row(conn, run)
    assert result[0] == "ok" or result[1].startswith("PT"), result
    if result[0] == "err":
        assert (after["lease_owner"], after["lease_expires_at"]) == (before["lease_owner"], before["lease_expires_at"])
    live = conn.execute("SELECT lease_expires_at > clock_timestamp() FROM runhub.workflow_runs WHERE id = %s",
                        (run,)).fetchone()[0]
    assert live, f"heartbeat answered {result} and left the lease expired at {after['lease_expires_at']}"
    assert _execute(a, run, "worker-a") == "running"


@pytest.mark.slow  # ~3 s: waits for a lease to lapse mid-execution
def test_claim_skips_a_run_whose_execution_is_in_progress(db_url, conn, workers):
    """A worker executing in an open transaction holds the run row: another worker's claim skips it
    (SKIP LOCKED) even once the lease has expired, and after the commit there is nothing to claim."""
    _, b = workers
    project, owner, run = _queued_run(conn, 2)
    a = connect(db_url, autocommit=False)
    try:
        assert _claim(a, "worker-a") == [run]
        a.execute("UPDATE runhub.workflow_runs SET lease_expires_at = clock_timestamp() + interval '3 seconds'"
                  " WHERE id = %s", (run,))
        a.commit()
        assert _execute(a, run, "worker-a") == "running"  # uncommitted: A holds the row lock
        wait_until(lambda: conn.execute("SELECT lease_expires_at < clock_timestamp() FROM runhub.workflow_runs"
                                        " WHERE id = %s", (run,)).fetchone()[0],
                   "worker A's lease to expire while it executes", deadline_seconds=20)
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(_claim, b, "worker-b")
            assert future.result(timeout=DEADLINE_SECONDS) == [], "claim must skip, not wait"
        a.commit()
    finally:
        a.close()
    assert _claim(b, "worker-b") == []
    assert _written(conn, run) == (2, 2)
    assert run_row(conn, run)["attempts"] == 1


def test_executions_in_one_project_are_serialized_so_the_frequency_cap_holds(db_url, conn, workers):
    """Two workers execute two actions of one project at once: the second waits for the first
    (the project's execution lock), then sees its recipients and caps the shared customers."""
    _, b = workers
    project, owner = ready_shop(conn)
    shared = checkouts(conn, project, 3, prefix="both", hours=2)
    for email in shared + ["signup-only@ex.com"]:
        signup(conn, project, email, hours=1)  # signed up after their checkout: nothing since
    preview(conn, project, owner, RECOVER)
    preview(conn, project, owner, "onboard_users")
    recover = create_run(conn, project, owner, RECOVER, "r")["runId"]
    onboard = create_run(conn, project, owner, "onboard_users", "o")["runId"]
    a = connect(db_url, autocommit=False)
    try:
        assert _claim(a, "worker-a", 1) == [recover]
        a.commit()
        assert _claim(b, "worker-b", 1) == [onboard]
        assert _execute(a, recover, "worker-a") == "running"  # not committed yet
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(_execute, b, onboard, "worker-b")
            wait_until(lambda: b.info.backend_pid in blocked_by(conn, a.info.backend_pid),
                       "worker B's execution to wait for worker A's")
            assert not future.done()
            a.commit()
            assert future.result(timeout=DEADLINE_SECONDS) == "running"
    finally:
        a.close()
    assert [r[0] for r in recipients(conn, recover)] == shared
    assert [r[0] for r in recipients(conn, onboard)] == ["signup-only@ex.com"], "the others were just mailed"


def _twenty_queued_runs(conn):
    runs = []
    for i in range(20):
        project, owner = ready_shop(conn)
        checkouts(conn, project, 2, prefix=f"p{i}-")
        preview(conn, project, owner, RECOVER)
        runs.append(create_run(conn, project, owner, RECOVER, "k")["runId"])
    return runs


def _assert_each_executed_exactly_once(conn, runs):
    rows = conn.execute("SELECT id::text, status, attempts, executed_at IS NOT NULL, lease_owner"
                        " FROM runhub.workflow_runs WHERE id::text = ANY (%s)", (runs,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(runs)
    assert {r[1:] for r in rows} == {("running", 1, True, None)}, rows
    per_run = dict(conn.execute("SELECT run_id::text, count(*) FROM runhub.outbox GROUP BY run_id").fetchall())
    assert per_run == {r: 2 for r in runs}
    assert conn.execute("SELECT count(*), count(DISTINCT message_id) FROM runhub.outbox").fetchone() == (40, 40)
    assert conn.execute("SELECT count(*) FROM runhub.workflow_run_recipients").fetchone()[0] == 40


@pytest.mark.parametrize("round_", range(3))
def test_parallel_process_runs_take_disjoint_runs(conn, workers, round_):
    a, b = workers
    runs = _twenty_queued_runs(conn)
    barrier = threading.Barrier(2, timeout=DEADLINE_SECONDS)

    def sweep(c):
        barrier.wait()
        return process_runs(c, 10)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(sweep, [a, b]))
    # Each claims 10: what the other holds is locked (skipped) or already running (not claimable).
    assert done == [10, 10]
    _assert_each_executed_exactly_once(conn, runs)


def test_process_runs_skips_what_an_open_sweep_holds(db_url, conn, workers):
    _, b = workers
    runs = _twenty_queued_runs(conn)
    a = connect(db_url, autocommit=False)
    try:
        assert process_runs(a, 10) == 10  # executed, not committed: A holds 10 run rows
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(process_runs, b, 20)
            assert future.result(timeout=DEADLINE_SECONDS) == 10, "B takes the other 10 without waiting"
        assert process_runs(b, 20) == 0
        a.commit()
    finally:
        a.close()
    assert process_runs(b, 20) == 0
    _assert_each_executed_exactly_once(conn, runs)


def test_an_executed_run_is_never_executed_again_even_with_tampered_lease(conn, workers):
    a, b = workers
    project, owner, run = _queued_run(conn, 3)
    assert process_runs(a) == 1
    written = recipients(conn, run), outbox(conn, run)
    assert len(written[0]) == 3

    # An expired lease on an executed run: not claimable.
    conn.execute("UPDATE runhub.workflow_runs SET lease_owner = 'ghost', lease_expires_at = now() - interval '1 hour',"
                 " attempts = 1 WHERE id = %s", (run,))
    assert _claim(b, "worker-b") == [] and process_runs(b) == 0
    # A live lease for a worker: execute_run still refuses, because the messages are written.
    conn.execute("UPDATE runhub.workflow_runs SET lease_owner = 'ghost', lease_expires_at = now() + interval '1 hour'"
                 " WHERE id = %s", (run,))
    assert _execute(b, run, "ghost") == "lease_lost"
    assert _heartbeat(b, run, "ghost") is False
    assert (recipients(conn, run), outbox(conn, run)) == written
    assert run_row(conn, run)["attempts"] == 1


def test_cancel_waits_for_an_open_execution_then_cancels_what_is_queued(db_url, conn):
    project, owner, run = _queued_run(conn, 3)
    a = connect(db_url, autocommit=False)
    canceller = connect(db_url)
    try:
        assert _claim(a, "worker-a") == [run]
        a.commit()
        assert _execute(a, run, "worker-a") == "running"  # messages written, not committed
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(attempt, lambda: canceller.execute(
                "SELECT runhub.cancel_run(%s, %s, %s)", (project, owner, run)).fetchone()[0])
            wait_until(lambda: canceller.info.backend_pid in blocked_by(conn, a.info.backend_pid),
                       "cancel_run to wait for the executing worker")
            assert not future.done()
            a.commit()
            result = future.result(timeout=DEADLINE_SECONDS)
    finally:
        a.close()
        canceller.close()
    assert result[0] == "ok", result
    cancelled = result[1]
    assert cancelled["status"] == "cancelled"
    assert cancelled["result"] | {"errorSummary": None} == {"totalRecipients": 3, "successful": 0, "failed": 0,
                                                            "pending": 0, "cancelled": 3, "errorSummary": None}
    assert {r[2] for r in recipients(conn, run)} == {"cancelled"} and len(recipients(conn, run)) == 3
    assert {m[1] for m in outbox(conn, run)} == {"cancelled"} and len(outbox(conn, run)) == 3
    assert process_runs(conn) == 0


def test_cancel_behind_an_execution_that_rolls_back_cancels_the_run_outright(db_url, conn):
    project, owner, run = _queued_run(conn, 3)
    a = connect(db_url, autocommit=False)
    canceller = connect(db_url)
    try:
        assert _claim(a, "worker-a") == [run]
        a.commit()
        assert _execute(a, run, "worker-a") == "running"
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(attempt, lambda: canceller.execute(
                "SELECT runhub.cancel_run(%s, %s, %s)", (project, owner, run)).fetchone()[0])
            wait_until(lambda: canceller.info.backend_pid in blocked_by(conn, a.info.backend_pid),
                       "cancel_run to wait for the executing worker")
            a.rollback()  # the worker crashed before committing
            result = future.result(timeout=DEADLINE_SECONDS)
        assert result[0] == "ok" and result[1]["status"] == "cancelled"
        assert _written(conn, run) == (0, 0)
        # The worker retries: its lease is gone.
        assert _execute(a, run, "worker-a") == "lease_lost"
        a.commit()
    finally:
        a.close()
        canceller.close()
    assert _written(conn, run) == (0, 0)
    assert _claim(conn, "worker-b") == []


def test_cancel_of_a_claimed_run_leaves_its_worker_nothing_to_do(conn, workers):
    a, _ = workers
    project, owner, run = _queued_run(conn, 2)
    assert _claim(a, "worker-a") == [run]
    assert conn.execute("SELECT runhub.cancel_run(%s, %s, %s)", (project, owner, run)).fetchone()[0]["status"] == "cancelled"
    assert _heartbeat(a, run, "worker-a") is False
    assert _execute(a, run, "worker-a") == "lease_lost"
    assert _written(conn, run) == (0, 0)
    row = run_row(conn, run)
    assert (row["status"], row["lease_owner"], row["completed_at"] is not None) == ("cancelled", None, True)
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("SELECT runhub.cancel_run(%s, %s, %s)", (project, owner, run))
    assert assert_refused(exc, "PT409", "workflows.runNotCancellable") == {"runId": run, "status": "cancelled"}


def test_an_execution_that_raises_is_retried_then_failed_after_5_attempts(conn):
    project, owner, run = _queued_run(conn, 2)
    conn.execute("""CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'smtp relay table is on fire'; END $$""")
    conn.execute("CREATE TRIGGER boom BEFORE INSERT ON runhub.outbox FOR EACH ROW EXECUTE FUNCTION public.boom()")
    for attempt_no in range(1, 6):
        assert process_runs(conn) == 1
        row = run_row(conn, run)
        assert row["attempts"] == attempt_no
        assert _written(conn, run) == (0, 0), "a failed attempt leaves no recipients behind"
        if attempt_no < 5:
            assert row["status"] == "running" and row["executed_at"] is None
            # Released for a retry about 30 s later, not at once.
            assert process_runs(conn) == 0
            conn.execute("UPDATE runhub.workflow_runs SET lease_expires_at = clock_timestamp() - interval '1 second'"
                         " WHERE id = %s", (run,))
    row = run_row(conn, run)
    assert row["status"] == "failed" and row["completed_at"] is not None
    assert row["result"]["reason"] == "workflows.executionError"
    assert "smtp relay table is on fire" in row["result"]["errorSummary"]
    assert row["result"]["totalRecipients"] == 0
    assert process_runs(conn) == 0


def test_stale_runs_are_listed_and_flagged(conn):
    project, owner, run = _queued_run(conn, 2)
    other_project, other_owner, fresh = _queued_run(conn, 2, prefix="o")
    queued_project, queued_owner, queued = _queued_run(conn, 2, prefix="q")
    assert process_runs(conn, 2) == 2  # the two oldest; the third stays queued
    assert run_row(conn, queued)["status"] == "queued"

    def stale_ids():
        return {str(r[0]) for r in conn.execute("SELECT id FROM runhub.stale_runs")}

    assert stale_ids() == set()
    conn.execute("UPDATE runhub.workflow_runs SET started_at = now() - interval '31 minutes' WHERE id = %s", (run,))
    conn.execute("UPDATE runhub.workflow_runs SET started_at = now() - interval '29 minutes' WHERE id = %s", (fresh,))
    assert stale_ids() == {run}
    assert get_run(conn, project, owner, run)["stale"] is True
    assert get_run(conn, other_project, other_owner, fresh)["stale"] is False
    assert get_run(conn, queued_project, queued_owner, queued)["stale"] is False
    listed = conn.execute("SELECT runhub.list_runs(%s, %s)", (project, owner)).fetchone()[0]
    assert [(r["id"], r["stale"]) for r in listed] == [(run, True)]
    running_for = conn.execute("SELECT running_for FROM runhub.stale_runs WHERE id = %s", (run,)).fetchone()[0]
    assert running_for.total_seconds() > 30 * 60

    # A finished run is not stale, however long ago it started.
    conn.execute("SELECT runhub.cancel_run(%s, %s, %s)", (project, owner, run))
    assert stale_ids() == set()
    assert get_run(conn, project, owner, run)["stale"] is False


def test_created_and_executed_runs_are_notified_after_commit(db_url, conn):
    listener = connect(db_url)
    try:
        listener.execute("LISTEN runhub_runs")
        listener.execute("LISTEN runhub_outbox")
        project, owner, run = _queued_run(conn, 1)
        create_run(conn, project, owner, RECOVER, "k")  # a replay: no second notification
        assert process_runs(conn) == 1
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
        assert got == [("runhub_runs", run), ("runhub_outbox", run)]
        assert [n for n in listener.notifies(timeout=0.2)] == []
    finally:
        listener.close()
