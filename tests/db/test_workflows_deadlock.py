"""Executions never deadlock: process_runs takes every project lock its batch needs up front, in
one global order, so two batches that reach the same projects in opposite orders wait for each
other instead. A deadlock would cost the losing run an attempt and its 30-second retry: every run
here must be executed on its first attempt."""
from __future__ import annotations

import random
import threading
import uuid

import pytest

from helpers.db import blocked_by, wait_until
from helpers.workflows import checkouts, connect, create_run, preview, process_runs, ready_shop, run_row, signup

# Deadlock races between real concurrent sessions.
pytestmark = pytest.mark.slow

RECOVER, ONBOARD = "recover_abandoned", "onboard_users"


def _project_with_runs(conn, shoppers: int, newcomers: int, prefix: str):
    """A project with a queued recovery run (shoppers) and a queued onboarding run (newcomers)."""
    project, owner = ready_shop(conn)
    checkouts(conn, project, shoppers, prefix=prefix)
    for i in range(newcomers):
        signup(conn, project, f"{prefix}-new{i}@ex.com")
    runs = {}
    for action in (RECOVER, ONBOARD):
        preview(conn, project, owner, action)
        runs[action] = create_run(conn, project, owner, action, uuid.uuid4().hex)["runId"]
    return project, runs


def _claim_order(conn, runs: list[str]) -> None:
    """Claims take runs oldest request first: make `runs` that order."""
    for n, run in enumerate(runs):
        conn.execute("UPDATE runhub.workflow_runs SET requested_at = now() - make_interval(mins => %s) WHERE id = %s",
                     (60 - n, run))


def _first_attempt_each(conn, runs: list[str]) -> None:
    for run in runs:
        row = run_row(conn, run)
        assert row["executed_at"] is not None and row["attempts"] == 1, (run, row["status"], row["attempts"])


def test_two_batches_in_opposite_project_orders_wait_instead_of_deadlocking(conn, db_url):
    """The reproduction: P1 with a 1,000-recipient recovery run and an onboarding run, P2 with two
    small runs, claimed in the order P1, P2, P2, P1 by two process_runs(2). Batch A is held inside
    its first execution (a session holds a recipient key it must write) until batch B is waiting
    too; before the fix, B took P2 and waited for P1 while A, let go, finished P1 and waited for P2."""
    p1, runs1 = _project_with_runs(conn, 1000, 2, "p1")
    p2, runs2 = _project_with_runs(conn, 3, 2, "p2")
    order = [runs1[RECOVER], runs2[RECOVER], runs2[ONBOARD], runs1[ONBOARD]]
    _claim_order(conn, order)

    holder = connect(db_url, autocommit=False)  # A's first execution will need this key: A waits for it
    holder.execute("""INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, status)
                      VALUES (%s, %s, 'p100@ex.com', 'queued')""", (runs1[RECOVER], p1))
    a, b = connect(db_url), connect(db_url)
    results = {}

    def batch(name, c):
        results[name] = process_runs(c, 2)

    ta = threading.Thread(target=batch, args=("a", a))
    ta.start()
    wait_until(lambda: a.info.backend_pid in blocked_by(conn, holder.info.backend_pid), "batch A to wait inside P1's run")
    tb = threading.Thread(target=batch, args=("b", b))
    tb.start()
    wait_until(lambda: b.info.backend_pid in blocked_by(conn, a.info.backend_pid), "batch B to wait for batch A")
    holder.rollback()
    ta.join(timeout=60)
    tb.join(timeout=60)
    holder.close()
    a.close()
    b.close()
    assert results == {"a": 2, "b": 2}
    _first_attempt_each(conn, order)


@pytest.mark.parametrize("seed", [1, 2])
def test_many_batches_over_many_projects_never_deadlock(conn, db_url, seed):
    """Eight projects with two runs each, claimed in a random order by four sessions running
    process_runs batches of 2 to 4 until nothing is left: every run executed on its first attempt."""
    rng = random.Random(seed)
    runs = []
    for i in range(8):
        _, project_runs = _project_with_runs(conn, rng.randrange(5, 60), rng.randrange(1, 4), f"s{seed}p{i}")
        runs += project_runs.values()
    rng.shuffle(runs)
    _claim_order(conn, runs)
    start = threading.Barrier(4)
    errors = []

    def worker(n):
        local = random.Random(seed * 10 + n)
        with connect(db_url) as c:
            start.wait()
            try:
                while process_runs(c, local.randrange(2, 5)):
                    pass
            except Exception as exc:  # noqa: BLE001 -- reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    _first_attempt_each(conn, runs)
