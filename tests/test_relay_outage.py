"""Relay outages are the sender's problem, not the message's: a relay that cannot be reached or
refuses the session charges no message; the sender stops claiming, probes the relay, says so once
at error level each way, and `runhub status` shows it. Mail that lost its point meanwhile expires."""
from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections import Counter

import pytest
from aiosmtpd.controller import Controller

from conftest import wait_until
from runhub_loader import logs
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.daemon import Sender, SenderConfig
from runhub_loader.mail.smtp import RelayUnavailable, SmtpConfig, SmtpConnection
from runhub_loader.db.status import collect, render
from workflow_helpers import checkouts, create_run, preview, process_runs, ready_project, run_status, signup


class RefusingRelay:
    """A relay in trouble: it takes each connection and answers 421 (service not available)."""

    def __init__(self, port: int):
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
            self.connections += 1

    def stop(self):
        self._sock.close()
        self._thread.join(timeout=5)


class Sink:
    def __init__(self):
        self.accepted: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.accepted.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


def _message(to="a@example.com") -> bytes:
    return f"From: x@example.com\r\nTo: {to}\r\nSubject: t\r\n\r\nhi\r\n".encode()


# -- what counts as the relay's failure -------------------------------------------------------------

def test_nothing_listening_is_the_relay_unavailable():
    with pytest.raises(RelayUnavailable, match="ConnectionRefused"):
        SmtpConnection(SmtpConfig("127.0.0.1", free_port(), timeout=5)).send(_message(), "x@example.com", "a@example.com")


def test_a_421_greeting_is_the_relay_unavailable():
    port = free_port()
    relay = RefusingRelay(port)
    try:
        with pytest.raises(RelayUnavailable, match="421"):
            SmtpConnection(SmtpConfig("127.0.0.1", port, timeout=5)).send(_message(), "x@example.com", "a@example.com")
    finally:
        relay.stop()


@pytest.mark.parametrize("broken", ["starttls", "auth"])
def test_tls_or_auth_the_relay_will_not_do_is_the_relay_unavailable(broken):
    """A relay that offers no STARTTLS (required here) or no AUTH (credentials given): the session
    cannot be had, whatever the message."""
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        config = SmtpConfig("127.0.0.1", controller.port, timeout=5, starttls=broken == "starttls",
                            user="runhub" if broken == "auth" else None, password="secret")
        with pytest.raises(RelayUnavailable):
            SmtpConnection(config).send(_message(), "x@example.com", "a@example.com")
    finally:
        controller.stop()


def test_a_refusal_of_the_message_is_still_the_message_s():
    """Once the session is open, what the relay says of a message is that message's outcome."""

    class Refuses(Sink):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
            return "550 5.1.1 no such user"

    controller = Controller(Refuses(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        outcome = SmtpConnection(SmtpConfig("127.0.0.1", controller.port, timeout=5)).send(
            _message(), "x@example.com", "a@example.com")
        assert (outcome.accepted, outcome.code) == (False, 550)
    finally:
        controller.stop()


# -- the outage, end to end -------------------------------------------------------------------------

def test_a_relay_down_longer_than_the_retry_schedule_fails_nothing_and_stale_mail_expires(conn, db_url, capfd):
    """The relay answers 421 to more connections than a message has attempts (8); meanwhile a
    recovery run's window passes. When it is back: every onboarding mail delivered once, no
    message failed or charged for the outage, the recovery mail cancelled as expired (its run's
    result says so), and the outage logged once each way and shown by `runhub status`."""
    logs.setup("text")
    project, owner = ready_project(conn)
    for i in range(5):
        signup(conn, project, f"new{i}@example.com")
    preview(conn, project, owner, "onboard_users")
    onboarding = create_run(conn, project, owner, "onboard_users", "welcome")["runId"]
    checkouts(conn, project, 3, prefix="cart")
    preview(conn, project, owner, "recover_abandoned")
    recovery = create_run(conn, project, owner, "recover_abandoned", "recover")["runId"]
    assert process_runs(conn) == 2

    port = free_port()
    relay = RefusingRelay(port)
    config = SenderConfig(database_url=db_url, smtp=SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?timeout=5"),
                          poll_seconds=0.5, concurrency=2, relay_probe_max_s=0.2,
                          unsubscribe_url="https://app.example/u?token={token}")
    daemon = Sender(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    controller = None
    try:
        def all_waiting_uncharged():
            rows = conn.execute("SELECT status, attempts FROM runhub.outbox WHERE project_id = %s", (project,)).fetchall()
            return len(rows) == 8 and all(r == ("queued", 0) for r in rows)

        wait_until(lambda: relay.connections > 8 and all_waiting_uncharged(), "the relay refused more than 8 sessions")
        down = conn.execute("SELECT relay, down_since, last_error FROM runhub.relay_status").fetchall()
        assert len(down) == 1 and down[0][1] is not None and "421" in down[0][2]
        assert "unreachable since" in render(collect(db_url))
        conn.execute("UPDATE runhub.outbox SET expires_at = now() - interval '1 second' WHERE run_id = %s", (recovery,))

        relay.stop()
        sink = Sink()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        wait_until(lambda: run_status(conn, onboarding) == "succeeded", "the onboarding mail to go out")
        conn.execute("SELECT runhub.cron_process_runs()")  # the minute sweep ends the run whose mail all expired
        wait_until(lambda: run_status(conn, recovery) == "failed", "the recovery run to end")
    finally:
        daemon.stop()
        thread.join(timeout=30)
        if controller is not None:
            controller.stop()
        relay.stop()

    delivered = Counter(m["To"].addresses[0].addr_spec for m in sink.accepted)
    assert delivered == {f"new{i}@example.com": 1 for i in range(5)}
    rows = conn.execute("SELECT run_id, status, attempts, last_error FROM runhub.outbox WHERE project_id = %s",
                        (project,)).fetchall()
    assert not [r for r in rows if r[1] == "failed"]
    assert {(r[1], r[2]) for r in rows if str(r[0]) == onboarding} == {("sent", 1)}
    expired = [r for r in rows if str(r[0]) == recovery]
    assert len(expired) == 3 and all(r[1] == "cancelled" and r[3].startswith("expired at ") for r in expired)
    result = conn.execute("SELECT result FROM runhub.workflow_runs WHERE id = %s", (recovery,)).fetchone()[0]
    assert result["cancelled"] == 3 and "expired at" in result["errorSummary"]
    assert conn.execute("SELECT down_since FROM runhub.relay_status").fetchone()[0] is None
    assert "reachable" in render(collect(db_url)) and "unreachable since" not in render(collect(db_url))
    log = capfd.readouterr().err.splitlines()
    assert len([line for line in log if line.startswith("error relay_unreachable")]) == 1
    assert len([line for line in log if line.startswith("error relay_reachable")]) == 1
