"""Prometheus metrics: the database's figures (runhub.metrics(): queues, runs, relays, the digest
job, cancelled mail), which `runhub metrics` prints once, and the sender's own (messages by outcome,
database calls and SMTP sends by latency, its local queue), which `runhub sender --metrics-port`
serves with the database's on every scrape."""
from __future__ import annotations

import contextlib
import time
import urllib.request
from typing import Callable, Iterator, NamedTuple

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from .db import queries

# Each figure runhub.metrics() gives: its type, help text and label names.
DATABASE_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "runhub_runs": ("gauge", "Workflow runs by state: queued, executing (claimed, not yet written), "
                             "delivering (written, mail going out).", ("state",)),
    "runhub_runs_stuck": ("gauge", "Runs running for over 30 minutes.", ()),
    "runhub_run_oldest_queued_seconds": ("gauge", "Age of the oldest queued run (0: none).", ()),
    "runhub_outbox_messages": ("gauge", "Outbox messages by state: due now, waiting to retry, being sent.", ("state",)),
    "runhub_outbox_oldest_due_seconds": ("gauge", "How long the oldest due message has waited (0: none).", ()),
    "runhub_outbox_cancelled": ("counter", "Messages cancelled instead of sent, by reason: expired (too late to "
                                           "be of use), suppressed, run_cancelled.", ("reason",)),
    "runhub_relay_up": ("gauge", "Whether each sender of the last hour last found its SMTP relay answering.",
                        ("worker", "relay")),
    "runhub_digests_due": ("gauge", "Projects whose digest is due now.", ()),
    "runhub_digest_lag_seconds": ("gauge", "How overdue the most overdue digest is (0: none).", ()),
    "runhub_digest_job_last_run_timestamp_seconds": ("gauge", "When the digest job last ran (Unix time).", ()),
    "runhub_digest_job_last_duration_seconds": ("gauge", "How long the digest job's last run took.", ()),
}


def database_families(conn) -> list:
    """runhub.metrics() as Prometheus metric families."""
    families = {}
    for name, (kind, help_text, labels) in DATABASE_METRICS.items():
        family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        families[name] = family(name, help_text, labels=list(labels))
    for name, labels, value in conn.execute(queries.DATABASE_METRICS):
        name = name.removesuffix("_total")  # a counter family adds it back
        kind, _, label_names = DATABASE_METRICS[name]
        families[name].add_metric([str(labels.get(label, "")) for label in label_names], value)
    return list(families.values())


class DatabaseCollector:
    """Reads runhub.metrics() on every scrape, on a connection of its own; `runhub_database_up` says
    whether it could (a scrape never fails for the database's sake)."""

    def __init__(self, database_url: str, timeout_s: float = 5.0):
        self.database_url = database_url
        self.timeout_s = timeout_s

    def collect(self):
        up = GaugeMetricFamily("runhub_database_up", "Whether the last scrape could read runhub.metrics().")
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=max(1, int(self.timeout_s)),
                                 options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
                                 application_name="runhub metrics") as conn:
                families = database_families(conn)
        except psycopg.Error:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def describe(self):
        return []  # collected on scrape only, never at registration


def database_text(database_url: str) -> bytes:
    """The database's figures once, in Prometheus' text format (`runhub metrics`)."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(database_url))
    return generate_latest(registry)


class SenderMetrics:
    """One sender's figures, in a registry of its own (several senders may share a process)."""

    def __init__(self, database_url: str | None = None):
        self.registry = CollectorRegistry()
        self.messages = Counter("runhub_sender_messages", "Messages this sender finished, by template and outcome: "
                                "sent; retry (a 4xx or no answer: due again later); failed (reason: smtp_5xx, "
                                "render, attempts); deferred (its relay unreachable: given back uncharged); "
                                "lease_lost (another sender had it).",
                                ["template", "outcome", "reason"], registry=self.registry)
        self.database_calls = Histogram("runhub_sender_database_call_seconds", "The sender's database calls, by call.",
                                        ["call"], registry=self.registry,
                                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.smtp_sends = Histogram("runhub_sender_smtp_send_seconds", "Handing one message to the relay.",
                                    registry=self.registry,
                                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.local_queue = Gauge("runhub_sender_local_queue", "Messages claimed and waiting for a worker.",
                                 registry=self.registry)
        self.relay_up = Gauge("runhub_sender_relay_up", "Whether this sender's relay answers (1) or not (0).",
                              registry=self.registry)
        self.relay_up.set(1)
        if database_url:
            self.registry.register(DatabaseCollector(database_url))

    def finished(self, template: str, status: str, code: int | None, reply: str) -> None:
        """An outcome as the database recorded it: sent, queued (a retry), failed, lease_lost."""
        outcome = {"queued": "retry"}.get(status, status)
        reason = ""
        if outcome == "failed":
            reason = ("render" if reply.startswith("render failed") else
                      "smtp_5xx" if code is not None and 500 <= code < 600 else "attempts")
        self.messages.labels(template, outcome, reason).inc()

    def deferred(self, template: str) -> None:
        self.messages.labels(template, "deferred", "").inc()

    @contextlib.contextmanager
    def timed(self, call: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.database_calls.labels(call).observe(time.perf_counter() - started)

    def serve(self, port: int, host: str):
        """Serve /metrics on host:port from a thread of its own; returns the server (shutdown())."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


# -- `runhub sender --processes N`: one endpoint for all of them ----------------------------------------

class SenderProcessView(NamedTuple):
    index: int
    metrics_port: int | None  # where it serves its own figures on loopback (None: not ready, or down)
    restarts: int


def serve_processes(port: int, host: str, database_url: str, processes: Callable[[], list[SenderProcessView]]):
    """The supervisor's /metrics: the database's figures once, and every sender process's own with a
    `process` label (Prometheus sums them with `sum without (process)`). Returns the server."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(database_url))
    registry.register(ProcessesCollector(processes))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


class ProcessesCollector:
    """On every scrape, reads each sender process's own endpoint (loopback, a port of its own) and
    labels its figures with the process's index."""

    TIMEOUT_S = 2.0

    def __init__(self, processes: Callable[[], list[SenderProcessView]]):
        self.processes = processes
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via $http_proxy

    def collect(self):
        up = GaugeMetricFamily("runhub_sender_process_up", "Whether this scrape could read the sender process's "
                               "figures (0: starting, restarting or not answering).", labels=["process"])
        restarts = CounterMetricFamily("runhub_sender_process_restarts", "Times the supervisor restarted the "
                                       "sender process after it died.", labels=["process"])
        merged: dict[str, Metric] = {}
        for view in self.processes():
            text = self._read(view.metrics_port)
            up.add_metric([str(view.index)], 0 if text is None else 1)
            restarts.add_metric([str(view.index)], view.restarts)
            for family in text_string_to_metric_families(text or ""):
                target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                               family.unit))
                target.samples += [s._replace(labels={**s.labels, "process": str(view.index)}) for s in family.samples]
        yield up
        yield restarts
        yield from merged.values()

    def _read(self, port: int | None) -> str | None:
        if port is None:
            return None
        try:
            with self._opener.open(f"http://127.0.0.1:{port}/metrics", timeout=self.TIMEOUT_S) as response:
                return response.read().decode()
        except OSError:  # it died or is stopping: its figures are missing from this scrape
            return None

    def describe(self):
        return []  # collected on scrape only
