"""Housekeeping: finished mail purged in batches without touching what is in play or what
attribution may still credit; the queue tables vacuumed early; `runhub status` showing failed cron
runs, queue bloat and the relay."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from click.testing import CliRunner

from helpers.attribution import deliver, sent_hours_ago
from helpers.workflows import create_run, preview, process_runs, ready_shop, signup
from runhub_loader.cli import main as cli
from runhub_loader.db.deploy import deploy


def _run_with_mail(conn, n: int, key: str):
    project, owner = ready_shop(conn)
    for i in range(n):
        signup(conn, project, f"{key}{i}@example.com")
    preview(conn, project, owner, "onboard_users")
    run = create_run(conn, project, owner, "onboard_users", key)["runId"]
    assert process_runs(conn) == 1
    return project, run


def test_finished_mail_is_purged_after_30_days_but_not_what_is_in_play_or_still_creditable(conn, login_as):
    _, old = _run_with_mail(conn, 3, "old")
    deliver(conn, old)
    sent_hours_ago(conn, old, 31 * 24)
    _, young = _run_with_mail(conn, 2, "young")
    deliver(conn, young)
    _, waiting = _run_with_mail(conn, 2, "waiting")  # queued, never sent
    conn.execute("UPDATE runhub.outbox SET created_at = now() - interval '40 days' WHERE run_id = %s", (waiting,))
    _, long_window = _run_with_mail(conn, 2, "long")
    deliver(conn, long_window)
    sent_hours_ago(conn, long_window, 31 * 24)
    conn.execute("UPDATE runhub.workflow_runs SET outcome_window_hours = 8760 WHERE id = %s", (long_window,))

    assert conn.execute("CALL runhub.purge_finished_mail(NULL)").fetchone()[0] == 3
    left = dict(conn.execute("SELECT run_id::text, count(*) FROM runhub.outbox GROUP BY 1").fetchall())
    assert left == {young: 2, waiting: 2, long_window: 2}
    assert conn.execute("CALL runhub.purge_finished_mail(NULL)").fetchone()[0] == 0
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("CALL runhub.purge_finished_mail(NULL, interval '1 hour')")
    sender = psycopg.connect(login_as("runhub_sender"), autocommit=True)
    with sender, pytest.raises(psycopg.errors.InsufficientPrivilege):
        sender.execute("CALL runhub.purge_finished_mail(NULL)")


def test_the_queue_tables_are_vacuumed_early(conn):
    options = dict(conn.execute("SELECT relname, reloptions FROM pg_class WHERE relnamespace = 'runhub'::regnamespace"
                                " AND relname IN ('outbox', 'workflow_runs')").fetchall())
    assert "autovacuum_vacuum_scale_factor=0.01" in options["outbox"]
    assert "autovacuum_vacuum_scale_factor=0.02" in options["workflow_runs"]


def test_status_shows_failed_cron_runs_queue_bloat_and_the_relay(fresh_db, cluster):
    dbname = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    deploy(fresh_db)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as cron:
        jobid = cron.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (f"runhub:{dbname}:purge-previews",)).fetchone()[0]
        cron.execute("""INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,
                                                          return_message, start_time, end_time)
                        VALUES (%s, nextval('cron.runid_seq'), 1, %s, 'postgres', 'x', 'failed',
                                'ERROR:  canceling statement due to statement timeout', now(), now())""", (jobid, dbname))
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("SELECT runhub.report_relay('mx-1', 'relay.example:587', 'SMTPAuthenticationError: (535, b''bad'')')")
    result = CliRunner().invoke(cli, ["--database-url", fresh_db, "status"])
    assert result.exit_code == 0, result.output
    assert "1 failed in 24 h, last: ERROR:  canceling statement due to statement timeout" in result.output
    assert "dead rows    none to worry about" in result.output, "a new install has nothing to flag"
    assert "relay        relay.example:587 unreachable since" in result.output


def test_a_component_login_gets_its_one_role_and_its_timeouts(conn, db_url, monkeypatch):
    name = f"mx_daemon_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MX_PASSWORD", "s3cret")
    runner = CliRunner()
    try:
        result = runner.invoke(cli, ["--database-url", db_url, "login-role", name, "--component", "app"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["--database-url", db_url, "login-role", name, "--component", "sender",
                                     "--password-env", "MX_PASSWORD"])
        assert result.exit_code == 0, result.output
        assert "granted runhub_sender only" in result.output
        roles = {r for (r,) in conn.execute(
            "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (name,)).fetchall()}
        assert roles == {"runhub_sender"}, "moved from app to sender: only sender left"
        with psycopg.connect(psycopg.conninfo.make_conninfo(db_url, user=name), autocommit=True) as login:
            assert login.execute("SHOW statement_timeout").fetchone()[0] == "10min"
            assert login.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "1min"
            assert login.execute("SELECT runhub.sender_idle()").fetchone()[0] in (True, False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                login.execute("SELECT runhub.list_actions(gen_random_uuid(), gen_random_uuid())")
        for refused in (["runhub_app", "--component", "app"], ["postgres", "--component", "app"]):
            result = runner.invoke(cli, ["--database-url", db_url, "login-role", *refused])
            assert result.exit_code != 0 and "not a component login" in result.output
        result = runner.invoke(cli, ["--database-url", db_url, "login-role", name, "--component", "ingest",
                                     "--password-env", "MX_UNSET"])
        assert result.exit_code != 0 and "MX_UNSET" in result.output
    finally:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(f'DROP OWNED BY "{name}"')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_status_flags_dead_rows_only_past_a_floor_that_matters():
    from runhub_loader.db.status import is_bloated

    assert not is_bloated(live=1, dead=3), "a new install's 75 % of 4 rows"
    assert not is_bloated(live=1_000_000, dead=50_000), "5 %: autovacuum's business"
    assert is_bloated(live=30_000, dead=12_000)
    assert not is_bloated(live=0, dead=9_999)
