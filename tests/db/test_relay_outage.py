"""Relay outages are the sender's problem, not the message's: a relay that cannot be reached or
refuses the session charges no message; the sender stops claiming, probes the relay, says so once
at error level each way, and `runhub status` shows it. Mail that lost its point meanwhile expires.
(What counts as the relay's failure, without a database: tests/unit/test_relay_failures.py.)"""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from aiosmtpd.controller import Controller

from helpers.db import wait_until
from helpers.smtp import RefusingRelay, Sink
from helpers.workflows import checkouts, create_run, preview, process_runs, ready_shop, run_status, signup
from runhub_loader import logs
from runhub_loader.db.embedded import free_port
from runhub_loader.db.status import collect, render
from runhub_loader.mail.daemon import Sender, SenderConfig
from runhub_loader.mail.smtp import SmtpConfig

# The outage end to end: the sender daemon against a relay down for longer than its retries.
pytestmark = pytest.mark.slow


# -- the outage, end to end -------------------------------------------------------------------------

def test_a_relay_down_longer_than_the_retry_schedule_fails_nothing_and_stale_mail_expires(conn, db_url, capfd):
    """The relay answers 421 to more connections than a message has attempts (8); meanwhile a
    recovery run's window passes. When it is back: every onboarding mail delivered once, no
    message failed or charged for the outage, the recovery mail cancelled as expired (its run's
    result says so), and the outage logged once each way and shown by `runhub status`."""
    logs.setup("text")
    project, owner = ready_shop(conn)
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
