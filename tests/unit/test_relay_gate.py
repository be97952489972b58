"""runhub_loader/mail/relay_gate.py: a relay that cannot be reached closes the gate (once), its
message is deferred and the local queue given back, and a probe reopens it when the relay answers;
against the fake typed door. The outage end to end: tests/db/test_relay_outage.py."""
from __future__ import annotations

import threading

import pytest

from helpers.db import DEADLINE_SECONDS
from helpers.fake_api import FakeApi, message, own_connections
from helpers.sender_fakes import FakeSmtp, SenderLog
from runhub_loader.mail.local_queue import LocalQueue
from runhub_loader.mail.relay_gate import RelayGate
from runhub_loader.mail.smtp import RelayUnavailable
from runhub_loader.metrics import SenderMetrics

DOWN = RelayUnavailable("SMTPConnectError: (421, b'try later')")


@pytest.fixture
def sender():
    """(the gate, the fake door, the probe's SMTP (not answering), the loop's wake-up, the sender's
    stop, the metrics) over a local queue of messages 1 to 4, message 1 in a worker's hands; the
    probe stopped at the end."""
    api = FakeApi([message(i) for i in range(1, 5)])
    metrics = SenderMetrics()
    queue = LocalQueue("w1", 10, 120, own_connections(api), metrics)
    queue.claim(api)
    queue.take(block=False)
    stopping, woken = threading.Event(), threading.Event()
    probe = FakeSmtp()
    gate = RelayGate("w1", queue, own_connections(api), lambda: probe, stopping, woken.set, metrics,
                     probe_max_s=0.02, first_probe_s=0.001)
    yield gate, api, probe, woken, stopping, metrics
    stopping.set()


def relay_up(metrics: SenderMetrics) -> float:
    return metrics.registry.get_sample_value("runhub_sender_relay_up")


def test_the_first_failure_closes_the_gate_defers_the_message_and_gives_back_the_queue(sender):
    gate, api, probe, woken, stopping, metrics = sender
    log = SenderLog()
    assert gate.is_open() and relay_up(metrics) == 1
    gate.message_failed(probe.relay, message(1), DOWN)
    assert not gate.is_open() and relay_up(metrics) == 0
    assert api.calls.of("defer_messages") == [("w1", [1], f"relay unavailable: {DOWN}")]
    assert api.calls.of("report_relay")[0] == ("w1", probe.relay, str(DOWN))
    assert api.calls.of("release_messages") == [("w1", [2, 3, 4])]
    assert metrics.registry.get_sample_value("runhub_sender_messages_total",
                                             {"template": "onboarding", "outcome": "deferred", "reason": ""}) == 1
    [said] = log.events("relay_unreachable")
    assert (said["level"], said["relay"]) == ("error", probe.relay)


def test_a_failure_while_closed_defers_its_message_and_says_nothing_more(sender):
    gate, api, probe, woken, stopping, metrics = sender
    log = SenderLog()
    gate.message_failed(probe.relay, message(1), DOWN)
    gate.message_failed(probe.relay, message(2), DOWN)
    assert [ids for _, ids, _ in api.calls.of("defer_messages")] == [[1], [2]]
    assert len(api.calls.of("release_messages")) == 1 and len(log.events("relay_unreachable")) == 1
    assert api.calls.of("report_relay") == [("w1", probe.relay, str(DOWN))]


def test_the_probe_reopens_the_gate_once_the_relay_answers_and_wakes_the_loop(sender):
    gate, api, probe, woken, stopping, metrics = sender
    log = SenderLog()
    gate.message_failed(probe.relay, message(1), DOWN)
    probe.calls.wait_for("probe", 2)
    assert not gate.is_open() and not woken.is_set(), "closed while the relay does not answer"
    probe.answering = True
    assert woken.wait(DEADLINE_SECONDS), "the loop woken to claim again"
    assert gate.is_open() and relay_up(metrics) == 1
    assert api.calls.of("report_relay")[-1] == ("w1", probe.relay, None) and api.relays == {probe.relay: None}
    [back] = log.events("relay_reachable")
    assert back["level"] == "error" and back["down_for_s"] >= 0


def test_the_probe_stops_with_the_sender(sender):
    gate, api, probe, woken, stopping, metrics = sender
    before = set(threading.enumerate())
    gate.message_failed(probe.relay, message(1), DOWN)
    [prober] = [t for t in threading.enumerate() if t not in before and t.name == "relay-probe"]
    probe.calls.wait_for("probe", 2)
    stopping.set()
    prober.join(DEADLINE_SECONDS)
    assert not prober.is_alive() and not gate.is_open() and not woken.is_set()


def test_a_database_away_too_leaves_the_message_to_its_lease(sender):
    gate, api, probe, woken, stopping, metrics = sender
    log = SenderLog()
    api.reachable = False
    gate.message_failed(probe.relay, message(1), DOWN)
    assert not gate.is_open()
    assert [e["call"] for e in log.events("database_unavailable")] == ["runhub.defer_messages", "runhub.report_relay"]
    assert len(log.events("release_failed")) == 1
