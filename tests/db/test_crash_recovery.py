"""PostgreSQL crashes (`pg_ctl stop -m immediate`: no shutdown checkpoint, recovery from the WAL)
in the middle of the work, then comes back: every run reaches a final state, no digest day is lost
or sent twice, and what was in flight left no trace. (A crash while mail is in flight:
tests/db/test_sender_faults.py, both restart modes.) The server crashed is fault_cluster, a cluster
of the fault tests' own, never the shared one.
Each crash is placed deterministically: a session holds a row the work must write, the work waits
on it, and the server goes down under it."""
from __future__ import annotations

import threading

import psycopg
import pytest

from helpers.attribution import deliver
from helpers.db import blocked_by, durable_commits, wait_until
from helpers.workflows import connect, create_run, preview, process_runs, ready_shop, run_row, run_status
from test_digests import digest_project, run_job, small_batches, yesterday

# Crash tests: fault_cluster, a cluster of their own, crashed under real sessions.
pytestmark = pytest.mark.slow


def _swallow(fn, errors: list):
    try:
        fn()
    except psycopg.Error as exc:  # the server went down under it
        errors.append(exc)


def _crash_while_waiting(cluster, conn, holder, session, work, what: str) -> None:
    """Run `work` on `session` in a thread until it waits on what `holder` holds, then crash the
    server under it: the work must die with it."""
    errors: list = []
    thread = threading.Thread(target=_swallow, args=(work, errors))
    thread.start()
    wait_until(lambda: session.info.backend_pid in blocked_by(conn, holder.info.backend_pid), what)
    cluster.restart(mode="immediate")
    for gone in (conn, holder):
        gone.close()
    thread.join(timeout=60)
    session.close()
    assert errors, f"{what}: it should have died with the server"


@pytest.mark.parametrize("how", ["process_runs", "claim_then_execute"])
def test_a_crash_during_an_execution_leaves_the_run_to_be_executed_again(fault_cluster, fault_conn, fault_db_url, how):
    """process_runs claims and executes in one transaction: the crash takes the claim with it and
    the run is queued as before. A worker that claimed first (claim_runs, committed) and died in
    execute_run leaves a lease: once it lapses the run is claimed again, an attempt spent."""
    durable_commits(fault_conn)
    project, owner = ready_shop(fault_conn)
    fault_conn.execute("""SELECT runhub.ingest_event(%s, jsonb_build_object(
                              'type', 'user_signed_up', 'occurredAt', to_char(now() - interval '1 hour', 'YYYY-MM-DD"T"HH24:MI:SSOF'),
                              'idempotencyKey', 'signup-' || g, 'customer', jsonb_build_object('email', 'user' || g || '@example.com')))
                            FROM generate_series(1, 1000) g""", (project,))
    preview(fault_conn, project, owner, "onboard_users")
    run = create_run(fault_conn, project, owner, "onboard_users", "crash")["runId"]
    holder = connect(fault_db_url, autocommit=False)  # the execution will need this recipient key, and wait
    holder.execute("INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email) VALUES (%s, %s, 'user1@example.com')",
                   (run, project))
    worker = connect(fault_db_url)
    if how == "process_runs":
        work = lambda: process_runs(worker)  # noqa: E731
    else:
        worker.execute("SET synchronous_commit = on")
        assert [str(r[0]) for r in worker.execute("SELECT runhub.claim_runs('w-crash', 1, 300)").fetchall()] == [run]
        work = lambda: worker.execute("SELECT runhub.execute_run(%s, 'w-crash')", (run,))  # noqa: E731
    _crash_while_waiting(fault_cluster, fault_conn, holder, worker, work, "the execution to be under way")

    with connect(fault_db_url) as after:
        row = run_row(after, run)
        assert after.execute("SELECT count(*) FROM runhub.workflow_run_recipients WHERE run_id = %s", (run,)).fetchone()[0] == 0
        if how == "process_runs":
            assert (row["status"], row["executed_at"], row["attempts"]) == ("queued", None, 0)
        else:
            assert (row["status"], row["executed_at"], row["attempts"], row["lease_owner"]) == ("running", None, 1, "w-crash")
            assert process_runs(after) == 0, "its lease still holds"
            after.execute("UPDATE runhub.workflow_runs SET lease_expires_at = now() WHERE id = %s", (run,))  # 300 s later
        assert process_runs(after) == 1
        assert (run_row(after, run)["attempts"], run_status(after, run)) == (1 if how == "process_runs" else 2, "running")
        assert after.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = %s", (run,)).fetchone()[0] == 1000
        deliver(after, run)
        assert run_status(after, run) == "succeeded"


def test_a_crash_during_the_digest_job_loses_no_day_and_sends_none_twice(fault_cluster, fault_conn, fault_db_url):
    durable_commits(fault_conn)
    projects = [digest_project(fault_conn, activity=False) for _ in range(450)]
    for n, project in enumerate(projects):  # a fixed order: most overdue first
        fault_conn.execute("UPDATE runhub.projects SET digest_next_at = now() - make_interval(mins => %s) WHERE id = %s",
                           (1000 - n, project))
    holder = connect(fault_db_url, autocommit=False)  # the third batch will need this digest row, and wait
    holder.execute("INSERT INTO runhub.digests (project_id, day, status, reason) VALUES (%s, %s, 'skipped', 'held')",
                   (projects[420], yesterday(fault_conn)))
    job = connect(fault_db_url)
    small_batches(job, 200)
    _crash_while_waiting(fault_cluster, fault_conn, holder, job, lambda: job.execute("CALL runhub.run_due_digests(NULL)"),
                         "the job's third batch to wait")

    with connect(fault_db_url) as after:
        assert after.execute("SELECT count(*) FROM runhub.digests").fetchone()[0] == 400, "two batches were committed"
        run_job(fault_db_url, batch_size=200)
        days = after.execute("SELECT project_id, day, count(*) FROM runhub.digests GROUP BY 1, 2").fetchall()
        assert len(days) == 450 and all(n == 1 for _, _, n in days)
        assert after.execute("SELECT count(*) FROM runhub.projects WHERE digest_next_at <= now()").fetchone()[0] == 0
