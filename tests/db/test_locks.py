"""Every lock runhub takes is one no other role can take (issue: any login could stall digests and
executions). runhub used advisory locks on fixed keys - 'runhub.digest_batch',
'runhub.cron_process_runs', 'runhub.execute:<project>' - and pg_advisory_lock is PUBLIC: a
dashboard's login held them and the digest job answered busy, process_runs hung. Now the locks are
rows of runhub.job_locks and runhub.execution_locks, on which no runhub role has any privilege.
Attackers here are LOGIN roles granted one runhub role each, as `runhub login-role` makes them."""
from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.workflows import checkouts, create_run, preview, ready_shop

ROLES = ["runhub_reader", "runhub_app", "runhub_ingest", "runhub_sender"]
# Every advisory lock key runhub ever took, and the project-less family a guess would try.
OLD_KEYS = ["runhub.digest_batch", "runhub.cron_process_runs"]


def _attacker(login_as, role):
    conn = psycopg.connect(login_as(role), autocommit=True)
    conn.execute("SET lock_timeout = '1s'")
    return conn


def _queued_run_and_due_digest(conn):
    """A project with a run queued, and digests on and due."""
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    preview(conn, project, owner, "recover_abandoned")
    run = create_run(conn, project, owner, "recover_abandoned", "k")["runId"]
    conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(
        {"dailyDigestEnabled": True, "dailyDigestHour": 9, "dailyDigestRecipient": "owner@shop.example"})))
    conn.execute("UPDATE runhub.projects SET digest_next_at = now() - interval '1 minute' WHERE id = %s", (project,))
    return project, run


@pytest.mark.parametrize("role", ROLES)
def test_a_login_holding_runhubs_old_lock_keys_stalls_neither_digests_nor_executions(conn, login_as, role):
    project, run = _queued_run_and_due_digest(conn)
    with _attacker(login_as, role) as attacker:
        for key in OLD_KEYS + [f"runhub.execute:{project}"]:
            attacker.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        conn.execute("SET lock_timeout = '5s'")  # a wait on the attacker fails the test, never hangs it
        batch = conn.execute("SELECT runhub.digest_batch(10)").fetchone()[0]
        assert not batch["busy"] and batch["served"] == 1, batch
        assert conn.execute("SELECT runhub.cron_process_runs()").fetchone()[0] == 1
        assert conn.execute("SELECT executed_at IS NOT NULL FROM runhub.workflow_runs WHERE id = %s",
                            (run,)).fetchone()[0]


@pytest.mark.parametrize("role", ROLES)
def test_no_runhub_role_can_take_the_locks_runhub_takes(conn, login_as, role):
    project, _ = _queued_run_and_due_digest(conn)
    conn.execute("SELECT runhub._lock_executions(ARRAY[%s]::uuid[])", (project,))  # its row exists now
    with _attacker(login_as, role) as attacker:
        for statement in ("SELECT 1 FROM runhub.job_locks FOR UPDATE",
                          "SELECT 1 FROM runhub.job_locks FOR KEY SHARE",
                          "SELECT 1 FROM runhub.execution_locks FOR UPDATE",
                          "SELECT 1 FROM runhub.execution_locks FOR KEY SHARE",
                          "LOCK TABLE runhub.job_locks",
                          "LOCK TABLE runhub.execution_locks IN ROW SHARE MODE",
                          "SELECT runhub._try_job_lock('digests')",
                          "SELECT runhub._lock_executions(ARRAY[gen_random_uuid()])"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with attacker.transaction():
                    attacker.execute(statement)


def test_a_second_digest_job_meanwhile_returns_busy_and_executions_of_a_project_wait(conn, db_url):
    """The row locks do what the advisory locks did: one digest batch at a time (the other returns
    busy at once), one execution of a project at a time (the other waits for it)."""
    project, _ = _queued_run_and_due_digest(conn)
    with psycopg.connect(db_url) as holder:
        assert holder.execute("SELECT runhub._try_job_lock('digests')").fetchone()[0]
        holder.execute("SELECT runhub._lock_executions(ARRAY[%s]::uuid[])", (project,))
        assert conn.execute("SELECT runhub.digest_batch(10)").fetchone()[0]["busy"]
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute("SELECT runhub.process_runs(10)")
        holder.rollback()
    conn.execute("RESET lock_timeout")
    assert conn.execute("SELECT runhub.process_runs(10)").fetchone()[0] == 1
    assert not conn.execute("SELECT runhub.digest_batch(10)").fetchone()[0]["busy"]
