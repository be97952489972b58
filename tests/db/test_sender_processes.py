"""`runhub sender --processes 2` as an operator runs it: a real supervisor subprocess over real sender
processes, against this test's database and an in-process aiosmtpd sink that records every mail it
accepts (test_sender_faults.FaultSink: it can hold or stall replies).

1. Two processes deliver every message exactly once, only the first executes runs, every log line
   of theirs names its process, and one metrics endpoint serves both.
2. SIGTERM to the supervisor stops both cleanly: exit 0, the mail in flight finished and recorded,
   what was claimed but not started released, nothing left claimed.
3. A sender process killed (SIGKILL) with mail in flight is restarted; its mail still goes out, a
   message twice only if it was in flight at the kill (at most --concurrency).
4. A supervisor killed (SIGKILL): its senders see their stdin end and stop as on SIGTERM.

The supervisor's policy with stand-in processes, without a database: tests/unit/test_sender_supervisor.py.
Every wait is on a condition with a deadline (helpers.db.wait_until), never a sleep.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.db import wait_until
from helpers.workflows import run_status
from runhub_loader.db.embedded import free_port
from helpers.fault_sink import BATCH, CONCURRENCY, backends, onboarding_run, outbox_status

# Sender processes started, stopped and killed.
pytestmark = pytest.mark.slow

RUNHUB = Path(sys.executable).parent / "runhub"
PROCESSES = 2


class Supervised:
    """`runhub --log-format json sender --processes 2 ...` with its own application_name; its log
    lines and its senders' go to one file (they inherit its stderr)."""

    def __init__(self, db_url: str, smtp_port: int, log_path: Path, app_name: str, extra: tuple[str, ...]):
        self.app_name = app_name
        self.log_path = log_path
        sep = "&" if "?" in db_url else "?"
        env = dict(os.environ, DATABASE_URL=f"{db_url}{sep}application_name={app_name}")
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(RUNHUB), "--log-format", "json", "sender", "--smtp-url", f"smtp://127.0.0.1:{smtp_port}",
                 "--processes", str(PROCESSES), "--poll-seconds", "0.5", "--concurrency", str(CONCURRENCY),
                 "--batch", str(BATCH), *extra],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    def lines(self) -> list[dict]:
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": "(not json)", "line": raw})
        return out

    def events(self, event: str) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == event]

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def alive(self) -> bool:
        """True while running; fails the test at once if it exited on its own."""
        if self.proc.poll() is None:
            return True
        pytest.fail(f"the supervisor exited unexpectedly with {self.proc.returncode}:\n{self.tail()}")

    def sender_pids(self) -> dict[int, int]:
        """Each process index's current pid (its latest start that said ready)."""
        return {line["process"]: line["pid"] for line in self.events("sender_process_ready")}

    def listening(self) -> bool:
        """Both senders started and wait for work (their LISTEN is in place)."""
        return self.alive() and {line.get("process") for line in self.events("listening")} >= set(range(PROCESSES))

    def terminate(self, timeout: float = 90) -> int:
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def supervisors(tmp_path):
    """Start supervisors; any still running at the end is killed, and its senders, by their own pids."""
    started: list[Supervised] = []

    def start(db_url: str, smtp_port: int, *extra: str) -> Supervised:
        app = f"processes-{len(started)}-{uuid.uuid4().hex[:6]}"
        started.append(Supervised(db_url, smtp_port, tmp_path / f"{app}.log", app, extra))
        return started[-1]

    yield start
    for sup in started:
        pids = list(sup.sender_pids().values())
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        print(f"--- {sup.app_name} (exit {sup.proc.returncode}) ---\n{sup.tail(20)}")


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie no longer does: it waits only to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def main_sessions(conn, app_name: str) -> set[int]:
    """The senders' LISTENing sessions (the ones running process_runs / claim_messages / LISTEN)."""
    return {pid for pid, _, query in backends(conn, app_name)
            if "claim_messages" in query or "process_runs" in query or query.startswith("LISTEN")}


def sent_count(conn, runs) -> int:
    return conn.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = ANY (%s) AND status = 'sent'",
                        (list(runs),)).fetchone()[0]


def scrape(port: int) -> dict[tuple, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


# -- 1. every message exactly once ------------------------------------------------------------------

def test_two_processes_deliver_every_message_exactly_once_and_one_endpoint_serves_their_metrics(conn, db_url, sink,
                                                                                             supervisors):
    metrics_port = free_port()
    sup = supervisors(db_url, sink.port, "--metrics-port", str(metrics_port))
    wait_until(sup.listening, "both sender processes to listen", 60)
    runs, emails = [], []
    for prefix in ("alpha", "beta"):
        _, run, addresses = onboarding_run(conn, prefix, 300)
        runs.append(run)
        emails += addresses
    wait_until(lambda: sup.alive() and sent_count(conn, runs) == 600, "all 600 messages to be recorded sent", 120)
    wait_until(lambda: all(run_status(conn, r) == "succeeded" for r in runs), "both runs to succeed")

    # The sink: each address once, each Message-ID once.
    with sink.lock:
        accepted = list(sink.accepted)
    assert Counter(rcpt for _, _, rcpt, _ in accepted) == Counter(emails)
    assert len({m for _, m, _, _ in accepted}) == 600
    assert {s[0] for s in outbox_status(conn, runs).values()} == {"sent"}

    # Both delivered; only the first executed the runs.
    # A message's log line follows its record in the database: wait for the last ones to be written.
    def sent_by_process() -> Counter:
        return Counter(line["process"] for line in sup.lines() if line.get("event") == "message_sent")

    wait_until(lambda: sum(sent_by_process().values()) >= 600, "the 600 message_sent log lines", 30)
    lines = sup.lines()
    sent_by = sent_by_process()
    assert sum(sent_by.values()) == 600 and sent_by[0] > 0 and sent_by[1] > 0, sent_by
    assert {line["process"] for line in lines if line.get("event") == "runs_processed"} == {0}
    assert {line["process"]: line["drives_runs"] for line in lines if line.get("event") == "sender_started"} == \
        {0: True, 1: False}
    # Every line a sender process wrote names it (JSON, as the supervisor's own).
    of_senders = [line for line in lines if line.get("logger") != "runhub.supervisor"]
    assert of_senders and all(line.get("process") in (0, 1) for line in of_senders), \
        [line for line in of_senders if line.get("process") not in (0, 1)][:3]

    # One endpoint: the database's figures once, each sender's with its process.
    wait_until(lambda: answers(metrics_port), "the metrics endpoint to answer")
    figures = scrape(metrics_port)
    assert figures[("runhub_database_up", ())] == 1
    for process in ("0", "1"):
        assert figures[("runhub_sender_process_up", (("process", process),))] == 1
        assert figures[("runhub_sender_process_restarts_total", (("process", process),))] == 0
        key = ("runhub_sender_messages_total",
               (("outcome", "sent"), ("process", process), ("reason", ""), ("template", "onboarding")))
        assert figures[key] == sent_by[int(process)]
    assert figures[("runhub_outbox_messages", (("state", "due"),))] == 0

    assert sup.terminate() == 0, sup.tail()
    assert sorted(line["process"] for line in sup.events("sender_process_stopped")) == [0, 1]
    assert sup.events("sender_processes_stopped")[0]["exit_code"] == 0


# -- 2. SIGTERM ---------------------------------------------------------------------------------------

def test_sigterm_stops_every_process_cleanly_and_leaves_nothing_claimed(conn, db_url, sink, supervisors):
    free = 10
    sup = supervisors(db_url, sink.port)
    wait_until(sup.listening, "both sender processes to listen", 60)
    sink.arm(0, trip_at=free, mode="stall")  # 10 mails go through, then every reply is held
    _, run, emails = onboarding_run(conn, "term", 200)

    def saturated():  # every worker of both in DATA waiting for its reply, and both local queues full again
        sup.alive()
        sending = conn.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = %s AND status = 'sending'",
                               (run,)).fetchone()[0]
        return len(sink.stalled_ids()) == PROCESSES * CONCURRENCY and sending == PROCESSES * (CONCURRENCY + BATCH)

    wait_until(saturated, "both processes' workers to stall in flight with full local queues", 60)
    in_flight = set(sink.stalled_ids())
    claimed = {m for m, s in outbox_status(conn, [run]).items() if s[0] == "sending"}
    mains = main_sessions(conn, sup.app_name)
    assert len(mains) == PROCESSES, backends(conn, sup.app_name)

    os.kill(sup.proc.pid, signal.SIGTERM)
    # Both main loops end (closing their LISTENing sessions) once the forwarded signal is taken: only
    # then are the held replies given, so that the workers finish the message in hand and take no other.
    wait_until(lambda: sup.alive() and not mains & main_sessions(conn, sup.app_name), "both senders to stop their loops")
    sink.release.set()
    assert sup.proc.wait(timeout=90) == 0, sup.tail()

    after = outbox_status(conn, [run])
    accepted = set(sink.accepted_ids())
    assert len(accepted) == free + PROCESSES * CONCURRENCY
    assert {m for m, s in after.items() if s[0] == "sent"} == accepted, "sent exactly what the sink accepted"
    assert in_flight <= accepted
    assert not any(s[0] == "sending" for s in after.values()), "nothing left claimed"
    released = claimed - in_flight
    assert len(released) == PROCESSES * BATCH
    for m in released:
        status, _, attempts, lease_owner, lease_expires_at = after[m]
        assert (status, attempts, lease_owner, lease_expires_at) == ("queued", 0, None, None), (m, after[m])
    released_by = defaultdict(int)
    for line in sup.events("messages_released"):
        released_by[line["process"]] += line["count"]
    assert dict(released_by) == {0: BATCH, 1: BATCH}, sup.tail()
    assert sorted(line["process"] for line in sup.events("sender_stopped")) == [0, 1]
    assert sorted(line["process"] for line in sup.events("sender_process_stopped")) == [0, 1]
    assert not backends(conn, sup.app_name)

    # Two processes again, until idle: the rest is delivered, each address exactly once overall.
    sink.arm(1)
    again = supervisors(db_url, sink.port, "--until-idle")
    assert again.proc.wait(timeout=120) == 0, again.tail()
    assert run_status(conn, run) == "succeeded"
    assert Counter(rcpt for _, _, rcpt, _ in sink.accepted) == Counter(emails)
    assert sorted(line["process"] for line in again.events("sender_process_finished")) == [0, 1]


# -- 3. a sender process killed -----------------------------------------------------------------------

def test_a_killed_sender_process_is_restarted_and_its_mail_goes_out_once_but_what_was_in_flight(conn, db_url, sink,
                                                                                               supervisors):
    sup = supervisors(db_url, sink.port)
    wait_until(sup.listening, "both sender processes to listen", 60)
    sink.arm(0, trip_at=40, mode="hold")  # the 40th mail's 250 is withheld: a worker is in flight
    _, run, emails = onboarding_run(conn, "kill", 300)
    wait_until(lambda: sup.alive() and sink.tripped.is_set(), "mail #40 to be in flight", 60)
    victim = sup.sender_pids()[1]
    os.kill(victim, signal.SIGKILL)
    sink.release.set()
    wait_until(lambda: sup.alive() and sup.events("sender_process_died"), "the supervisor to see it die")
    [died] = sup.events("sender_process_died")
    assert (died["level"], died["process"], died["pid"], died["signal"]) == ("error", 1, victim, "SIGKILL")
    wait_until(lambda: sup.alive() and sup.sender_pids()[1] != victim, "process 1 to be restarted and ready", 60)
    assert [line["restarts"] for line in sup.events("sender_process_started") if line["process"] == 1] == [0, 1]

    def all_sent():
        # What the lapse of the dead one's leases does 120 s later, now (and again, should a
        # statement of its still have been running).
        conn.execute("""UPDATE runhub.outbox SET lease_expires_at = now()
                         WHERE status = 'sending' AND lease_owner LIKE %s AND lease_expires_at > now()""",
                     (f"%/{victim}/%",))
        return sup.alive() and sent_count(conn, [run]) == 300

    wait_until(all_sent, "all 300 messages to be recorded sent", 120)
    wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")
    per_address = Counter(rcpt for _, _, rcpt, _ in sink.accepted)
    assert set(per_address) == set(emails)
    twice = [a for a, n in per_address.items() if n > 1]
    assert max(per_address.values()) <= 2 and len(twice) <= CONCURRENCY, twice
    per_message = Counter(m for _, m, _, _ in sink.accepted)
    assert len(per_message) == 300, "a mail sent again kept its Message-ID"
    sent_events = conn.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM runhub.business_events"
                               " WHERE event_type = 'onboarding_email_sent'").fetchone()
    assert sent_events == (300, 300), "one sent event per message, however often it went out"
    assert sup.terminate() == 0, sup.tail()


# -- 4. the supervisor killed ------------------------------------------------------------------------

def test_sender_processes_stop_cleanly_when_their_supervisor_is_killed(conn, db_url, sink, supervisors):
    sup = supervisors(db_url, sink.port)
    wait_until(sup.listening, "both sender processes to listen", 60)
    pids = sup.sender_pids()
    sup.proc.kill()
    sup.proc.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), "its senders to exit", 60)
    assert sorted(line["process"] for line in sup.events("supervisor_gone")) == [0, 1]
    assert sorted(line["process"] for line in sup.events("sender_stopped")) == [0, 1]
    wait_until(lambda: not backends(conn, sup.app_name), "their database sessions to end")
