"""The fault tests' SMTP sink (an aiosmtpd relay that records what it accepts and can hold, race or
stall a reply), and the database helpers the sender's process tests share: a run of n onboarding
mails, the sender's sessions, the outbox of some runs. Used by db/test_sender_faults.py and
db/test_sender_processes.py."""
from __future__ import annotations

import asyncio
import email.policy
import threading
from contextlib import contextmanager
from email.parser import BytesHeaderParser
from email.utils import parseaddr

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from helpers.mail import stored_message_id
from helpers.workflows import create_run, preview, ready_shop
from runhub_loader.db.api import Api
from runhub_loader.db.embedded import free_port
from runhub_loader.mail import defaults
from runhub_loader.mail.sink import ehlo_responses

CONCURRENCY = 4  # the process tests' senders run with 4 workers,
BATCH = defaults.BATCH  # and claim the CLI's default batch


class FaultSink:
    """An aiosmtpd handler that records (generation, Message-ID, RCPT, To) of every mail it accepts,
    counts its open sessions, and can trip or stall at the n-th mail of a generation:

    - "hold":  the n-th mail is accepted (recorded), `tripped` is set, and its 250 is withheld until
               `release` is set: the sender is then necessarily waiting on it (in flight).
    - "race":  the n-th mail is accepted and answered at once; `tripped` is set.
    - "stall": mails after the n-th are not answered until `release` is set (they are listed in
               `stalled` meanwhile), then accepted.
    """

    HOLD_LIMIT = 60.0  # a held reply never waits longer than this (the test fails instead of hanging)

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted: list[tuple[int, str, str, str]] = []
        self.stalled: list[str] = []
        self.sessions = 0
        self.arm(0)

    def arm(self, generation: int, trip_at: int | None = None, mode: str = "hold") -> None:
        with self.lock:
            self.generation = generation
            self.trip_at = trip_at
            self.mode = mode
            self.count = 0  # mails of this generation that reached the end of DATA
            self.stalled = []
            self.tripped = threading.Event()
            self.release = threading.Event()
            self.trip_message_id: str | None = None

    def _record(self, message_id: str, rcpt: str, to: str) -> None:
        self.accepted.append((self.generation, message_id, rcpt, to))

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        """PIPELINING, as runhub smtp-sink and most production MTAs offer it (the classic exchange
        is covered in test_sender_e2e and test_smtp)."""
        return ehlo_responses(session, hostname, responses)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(envelope.content)
        message_id = stored_message_id(headers["Message-ID"])
        to = parseaddr(str(headers["To"]))[1].lower()
        assert len(envelope.rcpt_tos) == 1, envelope.rcpt_tos
        rcpt = envelope.rcpt_tos[0].lower()
        with self.lock:
            self.count += 1
            n, trip_at, mode, release = self.count, self.trip_at, self.mode, self.release
            if mode == "stall" and trip_at is not None and n > trip_at:
                self.stalled.append(message_id)
                wait_then_accept = True
            else:
                wait_then_accept = False
                self._record(message_id, rcpt, to)
                if trip_at is not None and n == trip_at and mode in ("hold", "race"):
                    self.trip_message_id = message_id
                    self.tripped.set()
        if wait_then_accept or (n == trip_at and mode == "hold"):
            loop = asyncio.get_running_loop()
            released = await loop.run_in_executor(None, release.wait, self.HOLD_LIMIT)
            if not released:
                return "451 4.3.0 held too long by the test sink"
            if wait_then_accept:
                with self.lock:
                    self._record(message_id, rcpt, to)
        return "250 OK"

    # views for the test thread
    def open_sessions(self) -> int:
        with self.lock:
            return self.sessions

    def accepted_ids(self, generation: int | None = None) -> list[str]:
        with self.lock:
            return [m for g, m, _, _ in self.accepted if generation is None or g == generation]

    def stalled_ids(self) -> list[str]:
        with self.lock:
            return list(self.stalled)


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP server, counting the sink's open sessions."""

    def connection_made(self, transport):
        with self.event_handler.lock:
            self.event_handler.sessions += 1
        super().connection_made(transport)

    def connection_lost(self, error):
        with self.event_handler.lock:
            self.event_handler.sessions -= 1
        super().connection_lost(error)


class SinkController(Controller):
    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


@contextmanager
def running_sink():
    """A FaultSink listening on a free loopback port (its `port`), stopped afterwards; a held reply
    is never left behind."""
    handler = FaultSink()
    controller = SinkController(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    try:
        yield handler
    finally:
        handler.release.set()
        controller.stop()


# -- the database side ------------------------------------------------------------------------------

def seed_signups(conn, project, prefix: str, n: int) -> list[str]:
    """n sign-ups an hour ago in one INSERT ... SELECT, and runhub.customers brought up to date with them."""
    conn.execute(
        """INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, customer_email)
           SELECT %(p)s, 'user_signed_up', now() - interval '1 hour', 'signup-' || i,
                  %(prefix)s || '-' || lpad(i::text, 4, '0') || '@example.com'
             FROM generate_series(1, %(n)s) i""", {"p": project, "prefix": prefix, "n": n})
    Api(conn).rebuild_customers(project)
    return [f"{prefix}-{i:04d}@example.com" for i in range(1, n + 1)]


def onboarding_run(conn, prefix: str, n: int):
    project, owner = ready_shop(conn)
    emails = seed_signups(conn, project, prefix, n)
    shown = preview(conn, project, owner, "onboard_users")
    assert shown["count"] == n, shown
    run = create_run(conn, project, owner, "onboard_users", f"faults-{prefix}")
    assert run["status"] == "queued", run
    return project, run["runId"], emails


def backends(monitor, app_name: str) -> list[tuple]:
    """(pid, state, query) of the sender's live sessions."""
    return monitor.execute("SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s",
                           (app_name,)).fetchall()


def outbox_status(conn, run_ids) -> dict[str, tuple]:
    """message_id -> (status, to_email, attempts, lease_owner, lease_expires_at) of these runs."""
    rows = conn.execute("SELECT message_id, status, to_email, attempts, lease_owner, lease_expires_at"
                        " FROM runhub.outbox WHERE run_id = ANY (%s)", (list(run_ids),)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}
