"""Metrics: `runhub sender --metrics-port` serves the sender's figures and the database's over HTTP,
scraped while mail is delivered; the counters move by exactly what was sent. `runhub metrics`
prints the database's once, as a sender login may read them."""
from __future__ import annotations

import threading
import urllib.request

import psycopg
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from helpers.db import wait_until
from helpers.workflows import process_runs, run_status
from runhub_loader import logs
from runhub_loader.cli import main as cli
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.daemon import Sender, SenderConfig
from runhub_loader.mail.smtp import SmtpConfig
from test_sender_e2e import ScriptedSink, onboarding_run


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of Prometheus text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return samples(response.read().decode())


def sent(figures, template="onboarding") -> float:
    return figures.get(("runhub_sender_messages_total", (("outcome", "sent"), ("reason", ""), ("template", template))), 0)


@pytest.fixture
def sink():
    handler = ScriptedSink({"refuse@example.com": ["550 5.1.1 no such user"]})
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


def test_the_senders_endpoint_counts_exactly_what_it_sent(conn, login_as, sink):
    handler, url = sink
    port = free_port()
    logs.setup("text")
    config = SenderConfig(database_url=login_as("runhub_sender"), smtp=SmtpConfig.from_url(url), poll_seconds=0.5,
                          concurrency=2, metrics_port=port, unsubscribe_url="https://app.example/u?token={token}")
    daemon = Sender(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: _answers(port), "the metrics endpoint to answer")
        before = scrape(port)
        assert before[("runhub_database_up", ())] == 1
        emails = [f"m{i}@example.com" for i in range(5)] + ["refuse@example.com"]
        _, _, run = onboarding_run(conn, emails)
        seen = []

        def delivered():  # scraped while the mail goes out, until the run is done
            seen.append(scrape(port))
            return run_status(conn, run) == "succeeded"
        wait_until(delivered, "the run to be delivered")
        after = scrape(port)
    finally:
        daemon.stop()
        thread.join(timeout=30)
    assert len(handler.accepted) == 5
    assert sent(after) - sent(before) == 5, "exactly the mails the relay accepted"
    failed = ("runhub_sender_messages_total", (("outcome", "failed"), ("reason", "smtp_5xx"), ("template", "onboarding")))
    assert after[failed] - before.get(failed, 0) == 1
    assert all(sent(a) <= sent(b) for a, b in zip(seen, seen[1:])), "a counter never goes back"
    assert after[("runhub_outbox_messages", (("state", "due"),))] == 0
    assert after[("runhub_sender_database_call_seconds_count", (("call", "claim_messages"),))] >= 1
    assert after[("runhub_sender_smtp_send_seconds_count", ())] == 6


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def test_runhub_metrics_prints_the_databases_figures_as_a_sender_login_reads_them(conn, login_as):
    """Queued work and a cancellation by suppression, as `runhub metrics` shows them."""
    project, owner, run = onboarding_run(conn, ["a@example.com", "b@example.com"])
    process_runs(conn)  # two messages due
    url = login_as("runhub_sender")
    before = samples(CliRunner().invoke(cli, ["--database-url", url, "metrics"]).output)
    conn.execute("SELECT runhub.suppress(%s, %s, 'b@example.com', 'manual')", (project, owner))
    result = CliRunner().invoke(cli, ["--database-url", url, "metrics"])
    assert result.exit_code == 0, result.output
    after = samples(result.output)
    assert after[("runhub_database_up", ())] == 1
    assert after[("runhub_outbox_messages", (("state", "due"),))] == 1
    cancelled = ("runhub_outbox_cancelled_total", (("reason", "suppressed"),))
    assert after[cancelled] - before[cancelled] == 1
    assert after[("runhub_runs", (("state", "delivering"),))] == 1


def test_runhub_metrics_says_when_it_cannot_read_them(conn, login_as):
    result = CliRunner().invoke(cli, ["--database-url", login_as("runhub_app"), "metrics"])
    assert result.exit_code == 1 and "could not read runhub.metrics()" in result.output
    with psycopg.connect(login_as("runhub_app")) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT * FROM runhub.metrics()")
