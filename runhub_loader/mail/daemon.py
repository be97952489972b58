"""`runhub sender`: the daemon that drives runs and delivers the outbox.

It LISTENs for `runhub_runs` (a run to execute) and `runhub_outbox` (messages to send) and also polls
every few seconds, since a NOTIFY is only a wake-up: after a lost connection it reconnects with
backoff, LISTENs again and catches up. Behind a pooler in transaction mode it prepares no statement
and LISTENs on a direct connection (`listen_url`), or only polls. Messages are claimed in batches
with a lease, rendered, and sent by a pool of workers, each on its own reused SMTP session; each
outcome is recorded as the server gave it (sent only after a 250). A relay that cannot be reached
is the sender's state, not a failure of its messages: it stops claiming and probes it. Leases are
heartbeated while sending. On SIGTERM it stops claiming, finishes what is in flight, releases the
rest and exits 0.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import queue
import select
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import quote

import psycopg

from .. import logs
from ..db import queries
from ..db.api import Api
from ..db.session import connect
from ..metrics import SenderMetrics
from . import defaults
from .recorder import Recorder
from .render import envelope_address, on_domain, render_bytes
from .smtp import Outcome, RelayUnavailable, SmtpConfig, SmtpConnection
from .wakeup import Wakeup

log = logs.get("sender")
DIGEST_CATCH_UP_S = 60.0  # how often the sender runs the digest job as a catch-up
NOTIFY_READ_MAX = 10_000  # NOTIFYs read in one go; more are read at the next wake-up


def dashboard_link(template: str, project_id: object) -> str:
    """The dashboard link of a project: `template` with {projectId} filled in (percent-encoded;
    a project id is a UUID, but the link must stay a link whatever it is)."""
    return template.replace("{projectId}", quote(str(project_id), safe=""))


@dataclass
class SenderConfig:
    database_url: str
    smtp: SmtpConfig
    from_addr: str = defaults.FROM_ADDR
    unsubscribe_url: str = defaults.UNSUBSCRIBE_URL
    dashboard_url: str = defaults.DASHBOARD_URL  # a digest's link; {projectId} is filled in
    concurrency: int = defaults.CONCURRENCY  # SMTP sessions, one per worker
    rate: float | None = None          # messages per second, all projects
    project_rate: float | None = None  # messages per second, per project
    batch: int = defaults.BATCH        # claimed ahead of the workers (see _claim)
    lease_seconds: int = defaults.LEASE_SECONDS
    poll_seconds: float = defaults.POLL_SECONDS
    # A NOTIFY wakes the sender at most this often (any login may NOTIFY: however many come, they
    # cost what polling this often costs; the ones that come meanwhile are one wake-up).
    wake_seconds: float = defaults.WAKE_SECONDS
    exit_when_idle: bool = False       # stop once nothing is due (for the demo and scripts)
    # Where to LISTEN for wake-ups: None, the database URL itself (a direct connection); a URL, a
    # direct connection beside a pooled database URL; "" (none), no LISTEN: poll every poll_seconds.
    listen_url: str | None = None
    relay_probe_max_s: float = defaults.RELAY_PROBE_MAX_S
    metrics_port: int | None = None    # serve Prometheus metrics here (runhub_loader/metrics.py)
    metrics_host: str = defaults.METRICS_HOST
    # Execute runs and catch up on digests. Under `--processes N` only the first process does: the
    # claims are safe concurrently, but N processes woken by every NOTIFY would each try (processes.py).
    drive_runs: bool = True

    @property
    def wakeups_url(self) -> str | None:
        return self.database_url if self.listen_url is None else (self.listen_url or None)


def _thread(target, name: str) -> threading.Thread:
    """A daemon thread that logs with its starter's bound fields (the sender's worker id)."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target,), name=name, daemon=True)


def compose(config: SenderConfig, message: dict) -> tuple[bytes, str]:
    """A claimed message as the bytes to send and its envelope recipient: rendered in its locale, its
    Message-ID on the platform's domain, a digest linked to its project's dashboard, the one-click
    unsubscribe link where it carries a token. Raises what rendering raises."""
    envelope_from = parseaddr(config.from_addr)[1] or config.from_addr
    token = message.get("unsubscribeToken")
    variables = message["variables"]
    if message["template"] == "digest":  # the digest links to its project's dashboard
        variables = {**variables, "runHubUrl": dashboard_link(config.dashboard_url, message["projectId"])}
    email = render_bytes(
        message["template"], message["locale"], variables,
        message_id=on_domain(message["messageId"], envelope_from.rpartition("@")[2] or "localhost"),
        to_email=message["toEmail"], to_name=message.get("toName"),
        from_addr=config.from_addr, from_name=message.get("fromName"), reply_to=message.get("replyTo"),
        unsubscribe_url=config.unsubscribe_url.format(token=token) if token else None)
    return email, envelope_address(message["toEmail"])


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
        # A worker that sees the local queue run low, and stop(), write a byte here: the main loop
        # selects on it and on its LISTENing connection at once.
        self._wakeup = Wakeup()
        self._more_due = False  # the last claim was full: more may be due right now
        self._digests_after = 0.0  # monotonic time of the next digest catch-up
        self._next_wake = 0.0  # monotonic time before which a NOTIFY does not wake the sender
        self.work: queue.Queue[dict] = queue.Queue()
        self.in_flight: set[int] = set()
        self._in_flight_lock = threading.Lock()
        self.global_rate = RateLimiter(config.rate)
        self.project_rate = RateLimiter(config.project_rate)
        self.totals = defaultdict(int)
        self._busy = 0  # workers holding a message, from taking it until its outcome is recorded
        self.recorder = Recorder(config.database_url, self.worker_id, self.stopping, lambda: self._busy)
        # The relay: while it is down nothing is claimed or sent, and one thread probes it.
        self._relay_lock = threading.Lock()
        self._relay_up = threading.Event()
        self._relay_up.set()
        self._relay_down_since: float | None = None
        self.metrics = SenderMetrics(config.database_url if config.metrics_port is not None else None)
        self.metrics.local_queue.set_function(self.work.qsize)

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        with logs.bound(worker=self.worker_id):
            log.info("sender_started", concurrency=self.config.concurrency, batch=self.config.batch,
                     drives_runs=self.config.drive_runs)
            metrics_server = None
            if self.config.metrics_port is not None:
                metrics_server = self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
                log.info("metrics_serving", host=self.config.metrics_host, port=self.config.metrics_port)
            threads = [_thread(self._worker, f"send-{i}") for i in range(self.config.concurrency)]
            threads.append(_thread(self._heartbeat, "heartbeat"))
            recorder = _thread(self.recorder.run, "recorder")
            recorder.start()
            for t in threads:
                t.start()
            try:
                self._main_loop()
            finally:
                self.stop()
                for t in threads[:-1]:  # workers finish the message in hand and take no other
                    t.join(timeout=self.config.lease_seconds)
                self.recorder.close()
                recorder.join(timeout=60)
                self._release_queued()
                self._wakeup.close()
                if metrics_server is not None:
                    metrics_server.shutdown()
                    metrics_server.server_close()
                log.info("sender_stopped", **self.totals)
        return 0

    def stop(self, *_args) -> None:
        self.stopping.set()
        self._wake()

    def _wake(self) -> None:
        self._wakeup.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- the loop: listen, drive runs, claim messages -------------------------------------------------
    def _main_loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with contextlib.ExitStack() as stack:
                    conn = stack.enter_context(connect(self.config.database_url))
                    wakeups = self._listen(stack, conn)
                    backoff = 0.5
                    catch_up = True
                    while not self.stopping.is_set():
                        if catch_up:  # first, and after every NOTIFY or poll; not for a refill
                            self._next_wake = time.monotonic() + self.config.wake_seconds
                            if self.config.drive_runs:
                                self._process_runs(conn)
                        if self._relay_up.is_set():  # while it is down, what is due stays in the database
                            self._claim(conn)
                        if self.config.exit_when_idle and self._idle(conn):
                            log.info("idle")
                            return
                        catch_up = self._wait(wakeups)
            except psycopg.Error as exc:  # lost connection, restart, failover: reconnect and catch up
                log.warning("database_unavailable", error=str(exc).strip(), retry_in_s=backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _listen(self, stack: contextlib.ExitStack, conn) -> psycopg.Connection | None:
        """The connection that LISTENs (the work's own, or a direct one beside a pooler), or None:
        polling only (a pooler in transaction mode cannot keep a LISTEN)."""
        url = self.config.wakeups_url
        if url is None:
            log.info("polling", every_s=self.config.poll_seconds)
            return None
        listener = conn if url == self.config.database_url else stack.enter_context(connect(url))
        listener.execute(queries.LISTEN_RUNS)
        listener.execute(queries.LISTEN_OUTBOX)
        log.info("listening", separate_connection=listener is not conn)
        return listener

    def _wait(self, wakeups) -> bool:
        """Until the local queue runs low while more is due (False: just refill), or a stop, the
        poll interval or a NOTIFY (True: catch up on runs too). A NOTIFY wakes the sender no sooner
        than wake_seconds after its last catch-up: any login may send one, and a flood of them must
        cost no more than polling that often. The NOTIFYs that come meanwhile (also during the
        catch-up, read with its results) are read at once, one wake-up."""
        deadline = time.monotonic() + self.config.poll_seconds
        notified = wakeups is not None and self._notified(wakeups)
        while not self.stopping.is_set():
            if self._more_due and self.work.qsize() <= self._low_water:
                return False
            now = time.monotonic()
            wake_at = min(deadline, self._next_wake) if notified else deadline
            if now >= wake_at:
                return True
            watched = [self._wakeup.fileno()] + ([wakeups.fileno()] if wakeups is not None and not notified else [])
            ready, _, _ = select.select(watched, [], [], wake_at - now)
            if self._wakeup.fileno() in ready:
                self._wakeup.drain()
                if self.config.exit_when_idle and self._nothing_in_hand():
                    return True
            if len(watched) > 1 and watched[1] in ready:
                notified = self._notified(wakeups)  # (raises if the server is gone)
        return True

    @staticmethod
    def _notified(wakeups) -> bool:
        """Whether NOTIFYs came, reading all that did (up to a bound, so a flood cannot hold the loop)."""
        return sum(1 for _ in wakeups.notifies(timeout=0, stop_after=NOTIFY_READ_MAX)) > 0

    def _nothing_in_hand(self) -> bool:
        with self._in_flight_lock:
            return not self.in_flight and self.work.empty()

    def _idle(self, conn) -> bool:
        """Nothing in hand, and nothing due: no run to execute, no message due or being sent."""
        if not self._nothing_in_hand():
            return False
        return Api(conn).sender_idle()

    def _process_runs(self, conn) -> None:
        with self.metrics.timed("process_runs"):
            done = Api(conn).process_runs(10)
        if done:
            log.info("runs_processed", runs=done)
        self._run_due_digests(conn)

    def _run_due_digests(self, conn) -> None:
        """Catch up on due digests (pg_cron's hourly job is the main way), at most once a minute."""
        if time.monotonic() < self._digests_after:
            return
        self._digests_after = time.monotonic() + DIGEST_CATCH_UP_S
        queued = Api(conn).run_due_digests()
        if queued:
            log.info("digests_queued", digests=queued)

    @property
    def _low_water(self) -> int:
        return self.config.batch // 2

    def _claim(self, conn) -> None:
        """Top the local queue up to a batch. It is refilled when half empty, so the workers never
        wait on a claim. A claim charges nothing: an attempt counts when a worker starts it."""
        room = self.config.batch - self.work.qsize()
        if room <= 0:
            return
        with self.metrics.timed("claim_messages"):
            messages = Api(conn).claim_messages(self.worker_id, room, self.config.lease_seconds)
        self._more_due = len(messages) == room
        with self._in_flight_lock:
            self.in_flight.update(message["id"] for message in messages)
        for message in messages:
            self.work.put(message)
        if messages:
            log.info("messages_claimed", count=len(messages), queued_locally=self.work.qsize())

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
            with connect(self.config.database_url) as conn:
                released = Api(conn).release_messages(self.worker_id, unstarted)
            log.info("messages_released", count=released)
        except psycopg.Error as exc:  # their leases lapse and another sender takes them
            log.warning("release_failed", error=str(exc).strip(), count=len(unstarted))

    # -- workers ------------------------------------------------------------------------------------
    # A worker holds one message at a time. It records that it starts a message before rendering
    # and sending it (in the same transaction as its previous outcome when the local queue has a
    # next message ready), and takes the next one only once its outcome is in the database: at
    # most one mail per worker is ever out but unrecorded.

    def _worker(self) -> None:
        smtp = SmtpConnection(self.config.smtp)
        message = None  # in hand, started
        try:
            while message is not None or not self.stopping.is_set():  # stopping: finish the one in hand
                if message is None:
                    message = self._take(block=True)
                    if message is None:
                        continue
                    self._set_busy(+1)
                    if not self._submit(None, None, message)[1]:
                        message = None
                        self._set_busy(-1)
                        continue
                try:
                    outcome = self._attempt(smtp, message)
                except RelayUnavailable as exc:  # the relay's fault: the message is given back uncharged
                    self._relay_failed(smtp, message, exc)
                    message = None
                    self._set_busy(-1)
                    continue
                except Exception as exc:  # a bug, not the server's answer: retry it later, with backoff
                    log.error("delivery_error", message_id=message["messageId"], error=repr(exc))
                    outcome = Outcome(False, None, f"sender error: {exc!r}"[:400])
                following = self._take(block=False)
                message = following if self._finish(message, outcome, following) else None
                if message is None:
                    self._set_busy(-1)
                if self._more_due and self.work.qsize() <= self._low_water:
                    self._wake()  # refill
                elif self.config.exit_when_idle and self._nothing_in_hand():
                    self._wake()  # see whether all is done
        finally:
            smtp.close()

    def _take(self, block: bool) -> dict | None:
        """The next message of the local queue, unless shutting down (it is then left for the
        release) or the relay is down (then none: wait for it to come back)."""
        if self.stopping.is_set():
            return None
        if not self._relay_up.is_set():
            if block:
                self._relay_up.wait(0.5)
            return None
        try:
            message = self.work.get(timeout=0.5) if block else self.work.get_nowait()
        except queue.Empty:
            return None
        if self.stopping.is_set():
            self.work.put(message)
            return None
        return message

    # -- the relay: down is a state of the sender, not a failure of its messages ---------------------
    def _relay_failed(self, smtp: SmtpConnection, message: dict, exc: RelayUnavailable) -> None:
        """Give the message back without its attempt; the first to see the relay down says so (at
        error level, once), stops the claims, gives back the local queue and starts the probe."""
        with self._relay_lock:
            first = self._relay_up.is_set()
            if first:
                self._relay_up.clear()
                self.metrics.relay_up.set(0)
                self._relay_down_since = time.monotonic()
        self.metrics.deferred(message["template"])
        self._database_call("defer_messages",
                            lambda api: api.defer_messages(self.worker_id, [message["id"]], f"relay unavailable: {exc}"))
        with self._in_flight_lock:
            self.in_flight.discard(message["id"])
        if first:
            log.error("relay_unreachable", relay=smtp.relay, error=str(exc))
            self._database_call("report_relay", lambda api: api.report_relay(self.worker_id, smtp.relay, str(exc)))
            self._release_queued()
            _thread(self._probe_relay, "relay-probe").start()

    def _probe_relay(self) -> None:
        """Probe the relay with backoff until it answers, then say so (once) and resume."""
        probe = SmtpConnection(self.config.smtp)
        wait = 1.0
        while not self.stopping.wait(wait):
            try:
                probe.probe()
            except RelayUnavailable:
                wait = min(wait * 2, self.config.relay_probe_max_s)
                continue
            down_for = time.monotonic() - (self._relay_down_since or time.monotonic())
            log.error("relay_reachable", relay=probe.relay, down_for_s=round(down_for, 1))
            self._database_call("report_relay", lambda api: api.report_relay(self.worker_id, probe.relay, None))
            self._relay_up.set()
            self.metrics.relay_up.set(1)
            self._wake()  # claim again now
            return

    def _database_call(self, name: str, call) -> None:
        """A rare call of its own (the relay's state), `call(api)` on a connection of its own: if the
        database is away too, the message's lease lapses and it comes back by itself."""
        try:
            with connect(self.config.database_url) as conn:
                call(Api(conn))
        except psycopg.Error as exc:
            log.warning("database_unavailable", error=str(exc).strip(), call=f"runhub.{name}")

    def _set_busy(self, delta: int) -> None:
        """A worker holds a message, from taking it until its outcome is recorded: the recorder
        waits for the busy workers' outcomes (Recorder.LINGER_S)."""
        with self._in_flight_lock:
            self._busy += delta

    def _attempt(self, smtp: SmtpConnection, message: dict) -> Outcome:
        """Render and send; what the server said (a message that cannot be rendered never will be:
        a permanent failure)."""
        with logs.bound(run_id=message.get("runId"), message_id=message["messageId"]):
            try:
                email, recipient = compose(self.config, message)
            except Exception as exc:
                log.error("render_failed", error=repr(exc))
                return Outcome(False, 554, f"render failed: {exc!r}"[:400])
            self.global_rate.wait()
            self.project_rate.wait(message["projectId"])
            with self.metrics.smtp_sends.time():
                return smtp.send(email, self.envelope_from, recipient)

    def _finish(self, message: dict, outcome: Outcome, following: dict | None) -> bool:
        """Record the outcome (and the start of `following`); whether `following` may be sent."""
        status, started = self._submit(message, outcome, following)
        if status is not None:
            self.totals[status] += 1
            self.metrics.finished(message["template"], status, outcome.code, outcome.reply)
            with logs.bound(run_id=message.get("runId"), message_id=message["messageId"]):
                log.info("message_" + ("sent" if outcome.accepted else "refused"), status=status,
                         smtp_code=outcome.code, reply=outcome.reply[:200], attempt=message["attempts"] + 1,
                         sent_total=self.totals["sent"])
        return following is not None and started

    def _submit(self, message: dict | None, outcome: Outcome | None, start: dict | None) -> tuple[str | None, bool]:
        """Through the recorder, wait included. A message whose lease was lost before it started is
        dropped (another sender has it); if the database cannot be reached (30 s into a shutdown),
        both are left to their leases."""
        failed = False
        try:
            with self.metrics.timed("record"):
                status, started = self.recorder.record(message and message["id"], outcome, start and start["id"])
        except Exception as exc:
            log.error("record_failed", error=repr(exc))
            status, started, failed = None, False, True
        if start is not None and not started and not failed:
            log.warning("lease_lost_before_send", message_id=start["messageId"], run_id=start.get("runId"))
        done = ([message["id"]] if message else []) + ([start["id"]] if start and not started else [])
        with self._in_flight_lock:
            self.in_flight.difference_update(done)
        return status, started

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
                conn = conn if conn is not None and not conn.closed else connect(self.config.database_url)
                Api(conn).heartbeat_messages(self.worker_id, ids, self.config.lease_seconds)
            except psycopg.Error as exc:
                log.warning("heartbeat_failed", error=str(exc).strip())
                conn = None
