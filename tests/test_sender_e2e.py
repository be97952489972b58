"""The sender end to end: create_run to mails in a real aiosmtpd sink, with per-recipient outcomes."""
from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections import Counter

import psycopg
import pytest
from aiosmtpd.controller import Controller

from conftest import wait_until
from runhub_loader import logs
from runhub_loader.sender import Sender, SenderConfig
from runhub_loader.smtp import SmtpConfig
from workflow_helpers import create_run, preview, ready_project, signup


class ScriptedSink:
    """Accepts mail, or answers with scripted codes per recipient: e.g. {'a@x': ['451 ...', '250 OK']}."""

    def __init__(self, script: dict[str, list[str]] | None = None):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.accepted: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            answers = self.script.get(envelope.rcpt_tos[0])
            answer = answers.pop(0) if answers else "250 OK"
            if answer.startswith("250"):
                self.accepted.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sink_factory():
    controllers = []

    def start(script=None):
        handler = ScriptedSink(script)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        controllers.append(controller)
        return handler, f"smtp://127.0.0.1:{controller.port}"

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def run_sender(db_url):
    """Start a sender in a thread against this test's database; stops it (like SIGTERM) at the end."""
    started = []
    logs.setup("text")  # the daemon's log lines show with a failing test

    def start(smtp_url: str, **overrides):
        config = SenderConfig(database_url=db_url, smtp=SmtpConfig.from_url(smtp_url), poll_seconds=0.5,
                              concurrency=2, unsubscribe_url="https://app.example/u?token={token}", **overrides)
        daemon = Sender(config)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        started.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in started:
        daemon.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the sender must stop when told to"


def onboarding_run(conn, emails):
    project, owner = ready_project(conn)
    for address in emails:
        signup(conn, project, address)
    shown = preview(conn, project, owner, "onboard_users")
    assert shown["count"] == len(emails)
    return project, owner, create_run(conn, project, owner, "onboard_users", "first")["runId"]


def run_status(conn, run):
    return conn.execute("SELECT status FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0]


def test_a_run_is_delivered_once_with_its_headers(conn, sink_factory, run_sender):
    emails = [f"user{i}@example.com" for i in range(6)]
    project, _, run = onboarding_run(conn, emails)
    sink, url = sink_factory()
    run_sender(url)
    wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")

    messages = {m["Message-ID"]: m for m in sink.accepted}
    rows = conn.execute("SELECT to_email, message_id, status, smtp_code FROM runhub.outbox WHERE run_id = %s",
                        (run,)).fetchall()
    assert sorted(r[0] for r in rows) == emails and len(sink.accepted) == len(emails)
    for to_email, message_id, status, code in rows:
        assert (status, code) == ("sent", 250)
        mail = messages[message_id]
        assert mail["To"].addresses[0].addr_spec == to_email
        assert mail["List-Unsubscribe"].startswith("<https://app.example/u?token=v1.")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    result = conn.execute("SELECT result FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0]
    assert result["successful"] == len(emails) and result["failed"] == 0
    sent_events = conn.execute("SELECT count(*) FROM runhub.business_events WHERE project_id = %s"
                               " AND event_type = 'onboarding_email_sent'", (project,)).fetchone()[0]
    assert sent_events == len(emails)


def test_a_temporary_refusal_is_retried_and_delivered_once(conn, sink_factory, run_sender):
    project, _, run = onboarding_run(conn, ["slow@example.com", "fine@example.com"])
    sink, url = sink_factory({"slow@example.com": ["421 4.7.0 try later", "451 4.3.0 busy", "250 OK"]})
    run_sender(url)

    def retry_due_now():  # the backoff is real (30 s+); bring the next attempt forward instead of sleeping
        conn.execute("UPDATE runhub.outbox SET next_attempt_at = now() WHERE run_id = %s AND status = 'queued'", (run,))
        return run_status(conn, run) == "succeeded"

    wait_until(retry_due_now, "the run to succeed after retries")
    delivered = Counter(m["To"].addresses[0].addr_spec for m in sink.accepted)
    assert delivered == {"slow@example.com": 1, "fine@example.com": 1}
    attempts = conn.execute("SELECT attempts, smtp_code FROM runhub.outbox WHERE run_id = %s AND to_email = %s",
                            (run, "slow@example.com")).fetchone()
    assert attempts == (3, 250)


def test_a_hard_bounce_fails_the_message_suppresses_the_address_and_summarizes(conn, sink_factory, run_sender):
    project, owner, run = onboarding_run(conn, ["gone@example.com"])
    sink, url = sink_factory({"gone@example.com": ["550 5.1.1 no such mailbox"]})
    run_sender(url)
    wait_until(lambda: run_status(conn, run) == "failed", "the run to fail")
    result = conn.execute("SELECT result FROM runhub.workflow_runs WHERE id = %s", (run,)).fetchone()[0]
    assert result["failed"] == 1 and result["successful"] == 0 and "550" in result["errorSummary"]
    assert conn.execute("SELECT reason FROM runhub.suppressions WHERE project_id = %s AND email = %s",
                        (project, "gone@example.com")).fetchone()[0] == "bounced"
    assert sink.accepted == []


def test_an_unsubscribe_before_sending_cancels_the_message(conn, sink_factory, run_sender):
    project, owner, run = onboarding_run(conn, ["stay@example.com", "leave@example.com"])
    conn.execute("SELECT runhub.process_runs(10)")
    token = conn.execute("SELECT runhub.unsubscribe_token(%s, 'leave@example.com')", (project,)).fetchone()[0]
    conn.execute("SELECT runhub.unsubscribe(%s)", (token,))
    sink, url = sink_factory()
    run_sender(url)
    wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")
    assert [m["To"].addresses[0].addr_spec for m in sink.accepted] == ["stay@example.com"]
