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

Each of its parts is a class with one job, and `Sender` wires them together: the loop and its
wake-ups (`loop.py`, `wakeup.py`) and what it catches up on besides mail (`catch_up.py`); the local
queue of claimed messages (`local_queue.py`); the workers (`workers.py`) and the recorder they write
their outcomes through (`recorder.py`); the relay gate and its probe (`relay_gate.py`); the
heartbeat of the held leases (`heartbeat.py`); the rate limits (`rate_limit.py`).
"""
from __future__ import annotations

import functools
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import quote

from .. import logs
from ..db.session import open_api
from ..metrics import SenderMetrics
from . import defaults
from .catch_up import CatchUp
from .heartbeat import Heartbeat
from .local_queue import LocalQueue
from .loop import Loop
from .rate_limit import RateLimiter
from .recorder import Recorder
from .relay_gate import RelayGate
from .render import envelope_address, on_domain, render_bytes
from .smtp import SmtpConfig, SmtpConnection
from .wakeup import Wakeup
from .workers import Delivery, Workers

log = logs.get("sender")


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
    batch: int = defaults.BATCH        # claimed ahead of the workers (see LocalQueue.claim)
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
    def envelope_from(self) -> str:
        """MAIL FROM: the address of from_addr (which may carry a name)."""
        return parseaddr(self.from_addr)[1] or self.from_addr

    @property
    def wakeups_url(self) -> str | None:
        return self.database_url if self.listen_url is None else (self.listen_url or None)


def compose(config: SenderConfig, message: dict) -> tuple[bytes, str]:
    """A claimed message as the bytes to send and its envelope recipient: rendered in its locale, its
    Message-ID on the platform's domain, a digest linked to its project's dashboard, the one-click
    unsubscribe link where it carries a token. Raises what rendering raises."""
    token = message.get("unsubscribeToken")
    variables = message["variables"]
    if message["template"] == "digest":  # the digest links to its project's dashboard
        variables = {**variables, "runHubUrl": dashboard_link(config.dashboard_url, message["projectId"])}
    email = render_bytes(
        message["template"], message["locale"], variables,
        message_id=on_domain(message["messageId"], config.envelope_from.rpartition("@")[2] or "localhost"),
        to_email=message["toEmail"], to_name=message.get("toName"),
        from_addr=config.from_addr, from_name=message.get("fromName"), reply_to=message.get("replyTo"),
        unsubscribe_url=config.unsubscribe_url.format(token=token) if token else None)
    return email, envelope_address(message["toEmail"])


class Sender:
    """The sender's parts wired together, their threads started and, on stop, wound down in order."""

    def __init__(self, config: SenderConfig):
        self.config = config
        self.worker_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        # The loop selects on this and on its LISTENing connection at once: a worker that sees the
        # local queue run low, the relay probe that sees it back, and stop() write a byte here.
        self._wakeup = Wakeup()
        self.metrics = SenderMetrics(config.database_url if config.metrics_port is not None else None)
        own_connection = functools.partial(open_api, config.database_url)
        new_smtp = functools.partial(SmtpConnection, config.smtp)
        self.local_queue = LocalQueue(self.worker_id, config.batch, config.lease_seconds, own_connection, self.metrics)
        self.metrics.local_queue.set_function(self.local_queue.size)
        self.relay_gate = RelayGate(self.worker_id, self.local_queue, own_connection, new_smtp, self.stopping,
                                    self._wakeup.wake, self.metrics, config.relay_probe_max_s)
        # The recorder lingers for the busy workers' outcomes; the workers record through it.
        self.recorder = Recorder(config.database_url, self.worker_id, self.stopping, lambda: self.workers.busy)
        delivery = Delivery(functools.partial(compose, config), config.envelope_from,
                            RateLimiter(config.rate), RateLimiter(config.project_rate), self.metrics)
        self.workers = Workers(self.local_queue, self.relay_gate, self.recorder, delivery, new_smtp, self.stopping,
                               self._wakeup.wake, self.metrics, config.exit_when_idle)
        self.heartbeat = Heartbeat(self.worker_id, self.local_queue, own_connection, self.stopping,
                                   config.lease_seconds)
        self.loop = Loop(config, self.stopping, self._wakeup, self.local_queue, self.relay_gate,
                         CatchUp(self.metrics))

    def run(self) -> int:
        with logs.bound(worker=self.worker_id):
            log.info("sender_started", concurrency=self.config.concurrency, batch=self.config.batch,
                     drives_runs=self.config.drive_runs)
            metrics_server = None
            if self.config.metrics_port is not None:
                metrics_server = self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
                log.info("metrics_serving", host=self.config.metrics_host, port=self.config.metrics_port)
            workers = [logs.thread(self.workers.run, f"send-{i}") for i in range(self.config.concurrency)]
            recorder = logs.thread(self.recorder.run, "recorder")
            recorder.start()
            for thread in workers + [logs.thread(self.heartbeat.run, "heartbeat")]:
                thread.start()
            try:
                self.loop.run()
            finally:
                self.stop()
                for thread in workers:  # each finishes the message in hand and takes no other
                    thread.join(timeout=self.config.lease_seconds)
                self.recorder.close()
                recorder.join(timeout=60)
                self.local_queue.release()
                self._wakeup.close()
                if metrics_server is not None:
                    metrics_server.shutdown()
                    metrics_server.server_close()
                log.info("sender_stopped", **self.workers.totals)
        return 0

    def stop(self, *_args) -> None:
        self.stopping.set()
        self._wakeup.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
