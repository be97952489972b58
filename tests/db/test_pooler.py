"""Every component through PgBouncer in transaction pooling: the API, the digest job, and the sender,
which prepares no statement there and takes its wake-ups from a direct connection (or polls)."""
from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb

from helpers.db import new_project, wait_until
from helpers.pooler import PgBouncer
from helpers.workflows import SETTINGS, run_status
from runhub_loader import logs
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.daemon import Sender, SenderConfig
from runhub_loader.mail.smtp import SmtpConfig

# A real PgBouncer, started for this module.
pytestmark = pytest.mark.slow


class CountingSink:
    def __init__(self):
        self.message_ids: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        for line in envelope.content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                with self.lock:
                    self.message_ids.append(line.split(b":", 1)[1].strip().decode())
                break
        return "250 OK"


@pytest.fixture(scope="module")
def bouncer(cluster):
    pool = PgBouncer(cluster)
    yield pool
    pool.stop()


@pytest.fixture
def sink():
    handler = CountingSink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


def pooled(bouncer, db_url):
    """A client of the pooler, as an application behind one connects: no prepared statements."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    return psycopg.connect(bouncer.url(dbname), autocommit=True, prepare_threshold=None)


def onboarding_run(conn, api, recipients: int) -> tuple:
    """A project with `recipients` sign-ups (ingested in one statement), previewed and run through `api`."""
    project, owner = new_project(conn)
    api.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(SETTINGS)))
    conn.execute("""SELECT runhub.ingest_event(%s, jsonb_build_object(
                        'type', 'user_signed_up', 'occurredAt', to_char(now() - interval '1 hour', 'YYYY-MM-DD"T"HH24:MI:SSOF'),
                        'idempotencyKey', 'signup-' || g, 'customer', jsonb_build_object('email', 'user' || g || '@example.com')))
                      FROM generate_series(1, %s) g""", (project, recipients))
    assert api.execute("SELECT runhub.preview(%s, %s, 'onboard_users', '{}')", (project, owner)).fetchone()[0]["count"] == recipients
    run = api.execute("SELECT runhub.create_run(%s, %s, 'onboard_users', %s, '{}', NULL, NULL)",
                      (project, owner, uuid.uuid4().hex)).fetchone()[0]["runId"]
    return project, run


def deliver(db_url, smtp_url, database_url, listen_url, run_until) -> None:
    config = SenderConfig(database_url=database_url, listen_url=listen_url, smtp=SmtpConfig.from_url(smtp_url),
                          poll_seconds=0.5, concurrency=4, unsubscribe_url="https://app.example/u?token={token}")
    daemon = Sender(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        run_until()
    finally:
        daemon.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_thousand_recipient_run_is_delivered_through_pgbouncer_with_no_error(conn, db_url, bouncer, sink, capfd):
    logs.setup("text")
    handler, smtp_url = sink
    with pooled(bouncer, db_url) as api:
        _, run = onboarding_run(conn, api, 1000)
        deliver(db_url, smtp_url, database_url=bouncer.url(conn.info.dbname), listen_url=db_url,
                run_until=lambda: wait_until(lambda: run_status(conn, run) == "succeeded", "the run to be delivered",
                                             deadline_seconds=120))
    assert len(handler.message_ids) == len(set(handler.message_ids)) == 1000
    assert conn.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = %s AND status = 'sent'", (run,)).fetchone()[0] == 1000
    log = capfd.readouterr().err.splitlines()
    assert [line for line in log if line.startswith(("error", "warning"))] == []
    assert any(line.startswith("info  listening") and "separate_connection=True" in line for line in log)


def test_without_a_direct_connection_the_sender_polls(conn, db_url, bouncer, sink, capfd):
    logs.setup("text")
    handler, smtp_url = sink
    with pooled(bouncer, db_url) as api:
        _, run = onboarding_run(conn, api, 20)
        deliver(db_url, smtp_url, database_url=bouncer.url(conn.info.dbname), listen_url="",
                run_until=lambda: wait_until(lambda: run_status(conn, run) == "succeeded", "the run to be delivered"))
    assert len(set(handler.message_ids)) == 20
    log = capfd.readouterr().err.splitlines()
    assert any(line.startswith("info  polling") for line in log)
    assert [line for line in log if line.startswith(("error", "warning"))] == []


def test_the_digest_job_and_repeated_calls_work_through_the_pooler(conn, db_url, bouncer):
    project, owner = new_project(conn)
    with pooled(bouncer, db_url) as api:
        api.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(
            {"dailyDigestEnabled": True, "dailyDigestRecipient": "owner@shop.example"})))
        conn.execute("UPDATE runhub.projects SET digest_next_at = now() - interval '1 minute' WHERE id = %s", (project,))
        for _ in range(10):  # more than psycopg's default prepare threshold (5), were it on
            api.execute("SELECT runhub.list_events(%s, %s, 'timeline', NULL, 10)", (project, owner)).fetchone()
        assert api.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0] == 0  # a quiet day: skipped
    assert conn.execute("SELECT status FROM runhub.digests WHERE project_id = %s", (project,)).fetchone()[0] == "skipped"
