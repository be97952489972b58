"""`runhub sender`: the daemon that drives runs and delivers the outbox.

It LISTENs for `runhub_runs` (a run to execute) and `runhub_outbox` (messages to send) and also polls
every few seconds, since a NOTIFY is only a wake-up: after a lost connection it reconnects with
backoff, LISTENs again and catches up. Messages are claimed in batches with a lease, rendered, and
sent by a pool of workers, each on its own reused SMTP session; each outcome is recorded as the
server gave it (sent only after a 250). Leases are heartbeated while sending. On SIGTERM it stops
claiming, finishes what is in flight, releases the rest and exits 0.
"""
from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from email.utils import parseaddr

import psycopg

from . import logs
from .render import render_message
from .smtp import Outcome, SmtpConfig, SmtpConnection

log = logs.get("sender")


@dataclass
class SenderConfig:
    database_url: str
    smtp: SmtpConfig
    from_addr: str = "Run Hub <runhub@localhost>"
    unsubscribe_url: str = "https://localhost/unsubscribe?token={token}"
    concurrency: int = 4
    rate: float | None = None          # messages per second, all projects
    project_rate: float | None = None  # messages per second, per project
    batch: int = 50
    lease_seconds: int = 120
    poll_seconds: float = 5.0
    exit_when_idle: bool = False       # stop once nothing is due (for the demo and scripts)


class RateLimiter:
    """Spaces sends so that no more than `rate` per second go out (per key)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next: dict[object, float] = defaultdict(float)
        self._lock = threading.Lock()

    def wait(self, key: object = None) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next[key])
            self._next[key] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class Sender:
    def __init__(self, config: SenderConfig):
        self.config = config
        self.worker_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.envelope_from = parseaddr(config.from_addr)[1] or config.from_addr  # MAIL FROM, once
        self.stopping = threading.Event()
        self._stopped_at = float("inf")
        self._local = threading.local()
        self.wakeup = threading.Event()
        self.work: queue.Queue[dict] = queue.Queue()
        self.in_flight: set[int] = set()
        self._in_flight_lock = threading.Lock()
        self.global_rate = RateLimiter(config.rate)
        self.project_rate = RateLimiter(config.project_rate)
        self.totals = defaultdict(int)

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        with logs.bound(worker=self.worker_id):
            log.info("sender_started", concurrency=self.config.concurrency, batch=self.config.batch)
            threads = [threading.Thread(target=self._worker, name=f"send-{i}", daemon=True)
                       for i in range(self.config.concurrency)]
            threads.append(threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True))
            for t in threads:
                t.start()
            try:
                self._main_loop()
            finally:
                self.stop()
                for t in threads[:-1]:  # workers finish the message in hand and take no other
                    t.join(timeout=self.config.lease_seconds)
                self._release_queued()
                log.info("sender_stopped", **self.totals)
        return 0

    def stop(self, *_args) -> None:
        self._stopped_at = min(self._stopped_at, time.monotonic())
        self.stopping.set()
        self.wakeup.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- the loop: listen, drive runs, claim messages -------------------------------------------------
    def _main_loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.config.database_url, autocommit=True) as conn:
                    conn.execute("LISTEN runhub_runs")
                    conn.execute("LISTEN runhub_outbox")
                    log.info("listening")
                    backoff = 0.5
                    while not self.stopping.is_set():
                        self._process_runs(conn)  # catch up first, then after every wake-up
                        self._claim(conn)
                        if self.config.exit_when_idle and self._idle(conn):
                            log.info("idle")
                            return
                        self._wait(conn)
            except psycopg.Error as exc:  # lost connection, restart, failover: reconnect and catch up
                log.warning("database_unavailable", error=str(exc).strip(), retry_in_s=backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _wait(self, conn) -> None:
        """Until a NOTIFY, free capacity after a full queue, or the poll interval."""
        deadline = time.monotonic() + self.config.poll_seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in conn.notifies(timeout=min(left, 0.5), stop_after=1):
                return
            if self.wakeup.is_set() and self.work.qsize() < self.config.concurrency:
                self.wakeup.clear()
                return

    def _idle(self, conn) -> bool:
        """Nothing in hand, and nothing due: no run to execute, no message due or being sent."""
        with self._in_flight_lock:
            if self.in_flight or not self.work.empty():
                return False
        return conn.execute(
            """SELECT NOT EXISTS (SELECT 1 FROM runhub.workflow_runs
                                   WHERE status = 'queued' OR (status = 'running' AND executed_at IS NULL))
                  AND NOT EXISTS (SELECT 1 FROM runhub.outbox
                                   WHERE (status = 'queued' AND next_attempt_at <= now()) OR status = 'sending')"""
        ).fetchone()[0]

    def _process_runs(self, conn) -> None:
        done = conn.execute("SELECT runhub.process_runs(10)").fetchone()[0]
        if done:
            log.info("runs_processed", runs=done)

    def _claim(self, conn) -> None:
        """Claim what the workers can take now: a batch, less what is still queued locally."""
        room = self.config.batch - self.work.qsize()
        if room <= 0:
            return
        rows = conn.execute("SELECT runhub.claim_messages(%s, %s, %s)",
                            (self.worker_id, room, self.config.lease_seconds)).fetchall()
        for (message,) in rows:
            with self._in_flight_lock:
                self.in_flight.add(message["id"])
            self.work.put(message)
        if rows:
            log.info("messages_claimed", count=len(rows), queued_locally=self.work.qsize())

    def _release_queued(self) -> None:
        """On shutdown: give back what no worker has started."""
        unstarted = []
        while True:
            try:
                unstarted.append(self.work.get_nowait()["id"])
            except queue.Empty:
                break
        if not unstarted:
            return
        with self._in_flight_lock:
            self.in_flight.difference_update(unstarted)
        try:
            with psycopg.connect(self.config.database_url, autocommit=True) as conn:
                released = conn.execute("SELECT runhub.release_messages(%s, %s)",
                                        (self.worker_id, unstarted)).fetchone()[0]
            log.info("messages_released", count=released)
        except psycopg.Error as exc:  # their leases lapse and another sender takes them
            log.warning("release_failed", error=str(exc).strip(), count=len(unstarted))

    # -- workers ------------------------------------------------------------------------------------
    def _worker(self) -> None:
        smtp = SmtpConnection(self.config.smtp)
        self._local.db = None
        try:
            while not (self.stopping.is_set() and self.work.empty()):
                try:
                    message = self.work.get(timeout=0.5)
                except queue.Empty:
                    continue
                if self.stopping.is_set():  # shutting down: leave it for the release
                    self.work.put(message)
                    return
                try:
                    self._deliver(smtp, message)
                except Exception as exc:  # keep the worker alive; the lease lapses and the message is retried
                    log.error("delivery_error", message_id=message["messageId"], error=repr(exc))
                    with self._in_flight_lock:
                        self.in_flight.discard(message["id"])
                    self._drop_db()
                self.wakeup.set()
        finally:
            smtp.close()
            self._drop_db()

    def _db(self):
        """This worker's database connection, reconnecting with backoff. Gives up 30 s into a
        shutdown: the message's lease then lapses and another sender finishes it."""
        wait = 0.5
        while self._local.db is None or self._local.db.closed:
            try:
                self._local.db = psycopg.connect(self.config.database_url, autocommit=True)
            except psycopg.OperationalError as exc:
                if self.stopping.is_set() and time.monotonic() - self._stopped_at > 30:
                    raise
                log.warning("database_unavailable", error=str(exc).strip(), retry_in_s=wait)
                time.sleep(wait)
                wait = min(wait * 2, 10.0)
        return self._local.db

    def _drop_db(self) -> None:
        db, self._local.db = getattr(self._local, "db", None), None
        if db is not None and not db.closed:
            db.close()

    def _deliver(self, smtp: SmtpConnection, message: dict) -> None:
        with logs.bound(run_id=message.get("runId"), message_id=message["messageId"]):
            token = message.get("unsubscribeToken")
            try:
                email = render_message(
                    message["template"], message["locale"], message["variables"],
                    message_id=message["messageId"], to_email=message["toEmail"], to_name=message.get("toName"),
                    from_addr=self.config.from_addr,
                    unsubscribe_url=self.config.unsubscribe_url.format(token=token) if token else None)
            except Exception as exc:  # a message we cannot render will never send: fail it for good
                log.error("render_failed", error=repr(exc))
                self._record(message, Outcome(False, 554, f"render failed: {exc!r}"[:400]))
                return
            self.global_rate.wait()
            self.project_rate.wait(message["projectId"])
            outcome = smtp.send(email, self.envelope_from, message["toEmail"])
            self._record(message, outcome)

    def _record(self, message: dict, outcome: Outcome) -> None:
        """Record what the server said, retrying across database outages: a 250 must not be lost."""
        while True:
            db = self._db()
            try:
                if outcome.accepted:
                    status = db.execute("SELECT runhub.record_sent(%s, %s, %s)",
                                        (message["id"], self.worker_id, outcome.reply)).fetchone()[0]
                else:
                    status = db.execute("SELECT runhub.record_failure(%s, %s, %s, %s)",
                                        (message["id"], self.worker_id, outcome.code, outcome.reply)).fetchone()[0]
                break
            except psycopg.OperationalError as exc:  # keep the outcome until the database is back
                log.warning("record_retry", error=str(exc).strip())
                self._drop_db()
        with self._in_flight_lock:
            self.in_flight.discard(message["id"])
        self.totals[status] += 1
        log.info("message_" + ("sent" if outcome.accepted else "refused"), status=status,
                 smtp_code=outcome.code, reply=outcome.reply[:200], attempt=message["attempts"],
                 sent_total=self.totals["sent"])

    def _heartbeat(self) -> None:
        interval = self.config.lease_seconds / 3
        conn = None
        while not (self.stopping.is_set() and not self.in_flight):
            time.sleep(min(interval, 1.0) if self.stopping.is_set() else interval)
            with self._in_flight_lock:
                ids = list(self.in_flight)
            if not ids:
                continue
            try:
                conn = conn if conn is not None and not conn.closed else psycopg.connect(
                    self.config.database_url, autocommit=True)
                conn.execute("SELECT runhub.heartbeat_messages(%s, %s, %s)",
                             (self.worker_id, ids, self.config.lease_seconds))
            except psycopg.Error as exc:
                log.warning("heartbeat_failed", error=str(exc).strip())
                conn = None
