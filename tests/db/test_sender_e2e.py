"""The sender end to end: create_run to mails in a real aiosmtpd sink, with per-recipient outcomes."""
from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from email.header import decode_header, make_header

import pytest
from aiosmtpd.controller import Controller

from psycopg.types.json import Jsonb

from helpers.db import wait_until
from helpers.mail import stored_message_id
from helpers.workflows import create_run, preview, process_runs, ready_shop, run_status, signup
from runhub_loader import logs
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.daemon import Sender, SenderConfig
from runhub_loader.mail.recorder import Recorder
from runhub_loader.mail.sink import ehlo_responses
from runhub_loader.mail.smtp import Outcome, SmtpConfig


class ScriptedSink:
    """Accepts mail, or answers with scripted codes per recipient: e.g. {'a@x': ['451 ...', '250 OK']}.
    Offers PIPELINING or not (the sender then sends MAIL, RCPT and DATA in one write, or one by one)."""

    def __init__(self, script: dict[str, list[str]] | None = None, pipelining: bool = False):
        self.pipelining = pipelining
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.accepted: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        return ehlo_responses(session, hostname, responses, self.pipelining)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            answers = self.script.get(envelope.rcpt_tos[0])
            answer = answers.pop(0) if answers else "250 OK"
            if answer.startswith("250"):
                self.accepted.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return answer


@pytest.fixture(params=[False, True], ids=["classic", "pipelining"])
def sink_factory(request):
    controllers = []

    def start(script=None):
        handler = ScriptedSink(script, pipelining=request.param)
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
    project, owner = ready_shop(conn)
    for address in emails:
        signup(conn, project, address)
    shown = preview(conn, project, owner, "onboard_users")
    assert shown["count"] == len(emails)
    return project, owner, create_run(conn, project, owner, "onboard_users", "first")["runId"]


def test_a_run_is_delivered_once_with_its_headers(conn, sink_factory, run_sender):
    emails = [f"user{i}@example.com" for i in range(6)]
    project, _, run = onboarding_run(conn, emails)
    sink, url = sink_factory()
    run_sender(url)
    wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")

    messages = {stored_message_id(m["Message-ID"]): m for m in sink.accepted}
    rows = conn.execute("SELECT to_email, message_id, status, smtp_code FROM runhub.outbox WHERE run_id = %s",
                        (run,)).fetchall()
    assert sorted(r[0] for r in rows) == emails and len(sink.accepted) == len(emails)
    for to_email, message_id, status, code in rows:
        assert (status, code) == ("sent", 250)
        mail = messages[message_id]
        assert mail["To"].addresses[0].addr_spec == to_email
        assert mail["List-Unsubscribe"].startswith("<https://app.example/u?token=v2.")
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


# -- the recorder: outcomes of several workers in one transaction --------------------------------

def claimed(conn, run, worker="w-rec"):
    """Claim the run's messages for `worker`; returns their outbox ids."""
    rows = conn.execute("SELECT runhub.claim_messages(%s, 100, 120)", (worker,)).fetchall()
    ids = [m["id"] for (m,) in rows if m["runId"] == run]
    assert ids, "nothing claimed"
    return ids


def test_the_recorder_writes_the_waiting_workers_outcomes_in_one_transaction(conn, db_url):
    _, _, run = onboarding_run(conn, ["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
    process_runs(conn)
    ids = claimed(conn, run)
    stopping = threading.Event()
    busy = [3]  # workers holding a message
    recorder = Recorder(db_url, "w-rec", stopping, busy=lambda: busy[0])
    recorder.LINGER_S = 60.0  # the batch must close because 3 outcomes are in, not on a timer
    thread = threading.Thread(target=recorder.run)
    thread.start()
    outcomes = {ids[0]: Outcome(True, 250, "250 a"), ids[1]: Outcome(False, 451, "451 4.3.0 try later"),
                ids[2]: Outcome(True, 250, "250 c")}
    statuses = {}
    workers = [threading.Thread(target=lambda i=i, o=o: statuses.__setitem__(i, recorder.record(i, o)[0]))
               for i, o in outcomes.items()]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert statuses == {ids[0]: "sent", ids[1]: "queued", ids[2]: "sent"}

    # One record_sent_many: both sent in the same transaction (the same now()).
    rows = dict(conn.execute("SELECT id, sent_at FROM runhub.outbox WHERE id = ANY (%s) AND status = 'sent'",
                             (ids[:3],)).fetchall())
    assert set(rows) == {ids[0], ids[2]} and rows[ids[0]] == rows[ids[2]]
    # Alone, the fourth is recorded in a transaction of its own, at once.
    busy[0] = 1
    assert recorder.record(ids[3], Outcome(True, 250, "250 d")) == ("sent", False)
    later = conn.execute("SELECT sent_at FROM runhub.outbox WHERE id = %s", (ids[3],)).fetchone()[0]
    assert later > rows[ids[0]]
    recorder.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    replies = dict(conn.execute("SELECT id, smtp_reply FROM runhub.outbox WHERE id = ANY (%s)", (ids,)).fetchall())
    assert replies == {ids[0]: "250 a", ids[1]: "451 4.3.0 try later", ids[2]: "250 c", ids[3]: "250 d"}


def test_a_start_is_recorded_with_the_previous_outcome_and_only_for_a_lease_still_held(conn, db_url):
    _, _, run = onboarding_run(conn, ["one@example.com", "two@example.com", "three@example.com"])
    process_runs(conn)
    first, second, third = claimed(conn, run)
    recorder = Recorder(db_url, "w-rec", threading.Event(), busy=lambda: 1)
    thread = threading.Thread(target=recorder.run)
    thread.start()
    assert recorder.record(None, None, first) == (None, True)  # a worker's first message: a start alone
    assert recorder.record(first, Outcome(True, 250, "250 ok"), second) == ("sent", True)
    row = conn.execute("SELECT o1.sent_at, o2.started_at FROM runhub.outbox o1, runhub.outbox o2"
                       " WHERE o1.id = %s AND o2.id = %s", (first, second)).fetchone()
    assert row[1] is not None and row[0] <= row[1]  # one transaction: sent_at is its start, started_at later
    conn.execute("UPDATE runhub.outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (third,))
    assert recorder.record(second, Outcome(True, 250, "250 ok"), third) == ("sent", False)  # its lease lapsed
    assert conn.execute("SELECT started_at FROM runhub.outbox WHERE id = %s", (third,)).fetchone()[0] is None
    recorder.close()
    thread.join(timeout=30)


def test_the_recorder_lingers_no_longer_than_its_limit(conn, db_url):
    """A worker stuck in a slow SMTP exchange does not hold the others' outcomes beyond LINGER_S."""
    _, _, run = onboarding_run(conn, ["slowpoke@example.com", "quick@example.com"])
    process_runs(conn)
    ids = claimed(conn, run)
    recorder = Recorder(db_url, "w-rec", threading.Event(), busy=lambda: 2)  # the other one never reports
    thread = threading.Thread(target=recorder.run)
    thread.start()
    assert recorder.record(ids[0], Outcome(True, 250, "250 ok")) == ("sent", False)  # it did not wait for a second
    recorder.close()
    thread.join(timeout=30)
    assert conn.execute("SELECT status FROM runhub.outbox WHERE id = %s", (ids[1],)).fetchone()[0] == "sending"


def test_runhub_sender_until_idle_delivers_what_is_due_then_exits_0(conn, db_url, sink_factory):
    """`runhub sender --until-idle`, as a script runs it: executes the queued run, delivers its mail
    and exits 0 once nothing is due."""
    from click.testing import CliRunner

    from runhub_loader.cli import main as cli

    _, _, run = onboarding_run(conn, [f"idle{i}@example.com" for i in range(3)])
    sink, url = sink_factory()
    result = CliRunner().invoke(cli, ["--database-url", db_url, "--log-format", "text", "sender",
                                      "--smtp-url", url, "--until-idle", "--poll-seconds", "0.5"])
    assert result.exit_code == 0, result.output
    assert run_status(conn, run) == "succeeded"
    assert sorted(m["To"].addresses[0].addr_spec for m in sink.accepted) == [f"idle{i}@example.com" for i in range(3)]


# -- each shop mails as itself -------------------------------------------------------------------

HOSTILE_NAME = 'Café "Ünïcode" <evil@attacker.example>,\nBcc: all@victims.example =?utf-8?q?x?='


def test_each_shop_mails_under_its_own_name_and_gets_its_replies(conn, sink_factory, run_sender):
    """From: the shop's senderName (default its name) on the platform's address; Reply-To: the
    shop's replyTo; Message-ID on the platform's domain. Parsed back from the delivered mail, with
    a name that tries to add an address and a header."""
    project, owner, run = onboarding_run(conn, ["new@example.com"])
    conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)",
                 (project, owner, Jsonb({"senderName": HOSTILE_NAME, "replyTo": " Owner@Bücher.de "})))
    sink, url = sink_factory()
    run_sender(url, from_addr="Platform Mail <mail@platform.example>")
    wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")
    [message] = sink.accepted
    [sender] = message["From"].addresses
    assert sender.addr_spec == "mail@platform.example"
    assert _rfc2047_display_name(message) == " ".join(HOSTILE_NAME.split())
    assert [a.addr_spec for a in message["Reply-To"].addresses] == ["owner@xn--bcher-kva.de"]
    assert "Bcc" not in message and [a.addr_spec for a in message["To"].addresses] == ["new@example.com"]
    assert message["Message-ID"] == f"<{run}.{_recipient_id(conn, run)}@platform.example>"


def test_a_shop_without_a_sender_name_mails_under_its_name_and_without_reply_to(conn, sink_factory, run_sender):
    project, _, run = onboarding_run(conn, ["plain@example.com"])
    name = conn.execute("SELECT name FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0]
    sink, url = sink_factory()
    run_sender(url, from_addr="Platform Mail <mail@platform.example>")
    wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")
    [message] = sink.accepted
    assert (message["From"].addresses[0].display_name, message["Reply-To"]) == (name, None)


def _recipient_id(conn, run) -> int:
    return conn.execute("SELECT id FROM runhub.workflow_run_recipients WHERE run_id = %s", (run,)).fetchone()[0]


def _rfc2047_display_name(message) -> str:
    """The From display name decoded as RFC 2047 says (white space between encoded words dropped;
    Python's address parser keeps it)."""
    raw = dict(message.raw_items())["From"]
    return str(make_header(decode_header(raw.rpartition("<")[0]))).strip()
