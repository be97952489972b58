"""Fault injection for the sender daemon (`runhub sender`), run as a real subprocess against this
test's database and an in-process aiosmtpd sink that records every mail it accepts.

1. SIGKILL, five times, over two runs of 1,000 recipients each (once as the daemon starts driving
   the runs, then after a random number of accepted mails, seeded, with mail in flight): nothing is
   lost, and a mail is delivered again only if it was in flight at a kill, with the same Message-ID.
2. A PostgreSQL restart while the sender idles: it reconnects, LISTENs again, and a run created
   afterwards is delivered through the NOTIFY path (well before the poll fallback could fire).
3. SIGTERM while sending: exit 0, the messages in flight are finished and recorded, the ones claimed
   but not started are released (queued, lease cleared), and nothing the sink did not accept is sent.
4. A PostgreSQL restart while mail is in flight: the workers retry recording their 250 on a new
   session; nothing is lost or delivered twice.
5. A sender paused past its leases, then resumed: it cannot undo the work of the one that took over.

The restarts (2 and 4) are of fault_cluster, a cluster of these tests' own, never the shared one.

Every wait is on a condition with a deadline (helpers.db.wait_until); no sleep stands in for a
synchronisation. The killed sender's leases are expired by hand (the CLI has no --lease-seconds):
`UPDATE ... SET lease_expires_at = now()` is exactly what lease expiry would do 120 s later.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from helpers.db import durable_commits, wait_until
from helpers.fault_sink import BATCH, CONCURRENCY, backends, onboarding_run, outbox_status, seed_signups
from helpers.workflows import connect, create_run, preview, ready_shop, run_status

# Fault tests: sender subprocesses killed, stopped, paused; fault_cluster restarted.
pytestmark = pytest.mark.slow

RUNHUB = Path(sys.executable).parent / "runhub"


# -- the sender as a subprocess ---------------------------------------------------------------------

class SenderProcess:
    """`runhub --log-format json sender ...` with its own application_name, logging to a file."""

    def __init__(self, db_url: str, smtp_port: int, log_path: Path, app_name: str, poll_seconds: float):
        self.app_name = app_name
        self.log_path = log_path
        sep = "&" if "?" in db_url else "?"
        env = dict(os.environ, DATABASE_URL=f"{db_url}{sep}application_name={app_name}")
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(RUNHUB), "--log-format", "json", "sender", "--smtp-url", f"smtp://127.0.0.1:{smtp_port}",
                 "--poll-seconds", str(poll_seconds), "--concurrency", str(CONCURRENCY), "--batch", str(BATCH)],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[dict]:
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": "(not json)", "line": raw})
        return out

    def count(self, event: str) -> int:
        return sum(1 for line in self.lines() if line.get("event") == event)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def alive(self) -> bool:
        """True while running; fails the test at once if it died on its own."""
        if self.proc.poll() is None:
            return True
        pytest.fail(f"sender {self.app_name} exited unexpectedly with {self.proc.returncode}:\n{self.tail()}")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def senders(tmp_path):
    """Start sender subprocesses; any still running at the end is killed (by its own pid)."""
    started: list[SenderProcess] = []

    def start(db_url: str, smtp_port: int, poll_seconds: float = 0.5, name: str = "sender") -> SenderProcess:
        app = f"faults-{name}-{len(started)}-{uuid.uuid4().hex[:6]}"
        proc = SenderProcess(db_url, smtp_port, tmp_path / f"{app}.log", app, poll_seconds)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill()
        print(f"--- {proc.app_name} (exit {proc.proc.returncode}) ---\n{proc.tail(15)}")


# -- the database side ------------------------------------------------------------------------------

def main_backend(monitor, app_name: str):
    """The daemon's LISTENing session (its only one running process_runs / claim_messages / LISTEN)."""
    rows = [r for r in backends(monitor, app_name)
            if "claim_messages" in r[2] or "process_runs" in r[2] or r[2].startswith("LISTEN")]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def idle_waiting(monitor, app_name: str) -> bool:
    """The main session is idle after its last claim: the daemon is in its wait for a NOTIFY."""
    row = main_backend(monitor, app_name)
    return row is not None and row[1] == "idle" and "claim_messages" in row[2]


# -- 1. SIGKILL at random points ----------------------------------------------------------------------

KILLS = 5
SEED = int(os.environ.get("RUNHUB_FAULT_SEED", "20260611"))  # fixed; override to explore other kill points


def test_sigkill_at_random_points_loses_nothing_and_duplicates_only_what_was_in_flight(conn, db_url, sink, senders):
    runs, addresses = [], []
    for prefix in ("alpha", "beta"):  # the per-run cap is 1,000 recipients: two runs make 2,000 mails
        _, run, emails = onboarding_run(conn, prefix, 1000)
        runs.append(run)
        addresses += emails
    assert len(set(addresses)) == 2000

    rng = random.Random(SEED)
    # The first kill lands as the daemon starts driving runs (process_runs, the first claim); the
    # others after a random number of mails accepted in that generation, the tripping one either held
    # (its 250 never reaches the sender) or answered (the kill races the sender's record_sent).
    plan = [("startup", None)] + [(rng.choice(["hold", "hold", "race"]), rng.randint(15, 280))
                                  for _ in range(KILLS - 1)]
    in_flight_at_kill: list[set[str]] = []  # per generation: accepted by the sink, never recorded sent
    for generation, (mode, trip_at) in enumerate(plan):
        sink.arm(generation, trip_at, mode if mode != "startup" else "hold")
        proc = senders(db_url, sink.port, name=f"kill{generation}")
        if mode == "startup":
            wait_until(lambda: proc.alive() and proc.count("listening") >= 1, "the sender to connect", 60)
        else:
            wait_until(lambda: proc.alive() and sink.tripped.is_set(), f"mail #{trip_at} of generation {generation}", 90)
        proc.kill()
        sink.release.set()  # the held reply goes nowhere: its session is gone
        # Settle before looking: the dead sender's SMTP sessions closed (so no further DATA of its can
        # be accepted) and its database sessions ended (so any statement it left running committed).
        wait_until(lambda: sink.open_sessions() == 0, "the killed sender's SMTP sessions to close")
        wait_until(lambda: not backends(conn, proc.app_name), "the killed sender's database sessions to end")

        state = outbox_status(conn, runs)
        unrecorded = {m for m in sink.accepted_ids(generation) if state[m][0] != "sent"}
        assert len(unrecorded) <= CONCURRENCY, (generation, mode, unrecorded)
        assert all(state[m][0] == "sending" for m in unrecorded), {m: state[m] for m in unrecorded}
        if mode == "hold":  # its 250 was withheld: the sender cannot have recorded it
            assert sink.trip_message_id in unrecorded, (sink.trip_message_id, unrecorded)
        in_flight_at_kill.append(unrecorded)
        assert any(s[0] != "sent" for s in state.values()), "the plan must kill before everything is out"
        # What lease expiry does 120 s later, now: the dead sender's messages are due again.
        conn.execute("UPDATE runhub.outbox SET lease_expires_at = now() WHERE status = 'sending'")

    # The last sender runs to the end.
    final = len(plan)
    sink.arm(final)
    proc = senders(db_url, sink.port, name="final")

    def all_sent():
        proc.alive()
        return conn.execute("SELECT count(*) FILTER (WHERE status = 'sent') = 2000, count(*) FROM runhub.outbox"
                            " WHERE run_id = ANY (%s)", (runs,)).fetchone()[0]

    wait_until(all_sent, "all 2,000 messages to be recorded sent", 150)
    wait_until(lambda: all(run_status(conn, r) == "succeeded" for r in runs), "both runs to succeed")
    assert proc.terminate() == 0, proc.tail()

    # The outbox: every message sent; the runs succeeded with every recipient counted once.
    state = outbox_status(conn, runs)
    assert len(state) == 2000 and {s[0] for s in state.values()} == {"sent"}
    message_of = {s[1]: m for m, s in state.items()}
    assert sorted(message_of) == sorted(addresses)
    for run in runs:
        status, result = conn.execute("SELECT status, result FROM runhub.workflow_runs WHERE id = %s",
                                      (run,)).fetchone()
        assert status == "succeeded" and result["successful"] == 1000 and result["failed"] == 0, result
    assert conn.execute("SELECT count(*) FROM runhub.workflow_run_recipients WHERE run_id = ANY (%s)"
                        " AND status = 'sent'", (runs,)).fetchone()[0] == 2000
    sent_events = conn.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM runhub.business_events"
                               " WHERE event_type = 'onboarding_email_sent'").fetchone()
    assert sent_events == (2000, 2000), "one sent event per message, however often it went out"

    # The sink: every address, each Message-ID for one address only (its own), nothing lost.
    with sink.lock:
        accepted = list(sink.accepted)
    print(f"plan {plan}; in flight at each kill {[len(u) for u in in_flight_at_kill]}; "
          f"accepted per generation {sorted(Counter(g for g, *_ in accepted).items())}")
    by_message: dict[str, set[str]] = defaultdict(set)
    for _, message_id, rcpt, to in accepted:
        assert rcpt == to, (message_id, rcpt, to)
        by_message[message_id].add(rcpt)
    assert all(len(rcpts) == 1 for rcpts in by_message.values()), \
        {m: r for m, r in by_message.items() if len(r) > 1}
    assert {m: next(iter(r)) for m, r in by_message.items()} == {m: s[1] for m, s in state.items()}
    per_address = Counter(rcpt for _, _, rcpt, _ in accepted)
    assert len(per_address) == 2000 and set(per_address) == set(addresses)

    # Duplicates: exactly the mails in flight at a kill, once more for each kill they were caught in.
    caught = Counter(m for unrecorded in in_flight_at_kill for m in unrecorded)
    per_message = Counter(m for _, m, _, _ in accepted)
    assert {m: n for m, n in per_message.items() if n > 1} == {m: 1 + caught[m] for m in caught}
    assert all(per_message[m] == 1 + caught[m] for m in per_message)
    duplicates = len(accepted) - 2000
    assert duplicates == sum(len(u) for u in in_flight_at_kill) <= KILLS * CONCURRENCY
    assert duplicates >= sum(1 for mode, _ in plan if mode == "hold") > 0, "the kills must catch mail in flight"
    for address, n in per_address.items():
        if n > 1:
            assert caught[message_of[address]] == n - 1, address


# -- 2. a database restart while the sender waits ------------------------------------------------------

POLL_SECONDS = 60.0
NOTIFY_BUDGET = 45.0  # from the restart's start; the poll cannot fire before reconnection + 60 s


def test_the_sender_reconnects_after_a_database_restart_and_hears_new_runs(fault_cluster, fault_db_url, sink, senders):
    """Tested path: NOTIFY after reconnection (not the catch-up). The sender polls only every 60 s;
    the run is created once it has reconnected, caught up and gone back to waiting, and its mail must
    arrive within 45 s of the restart's start, which only the re-established LISTEN can explain (the
    next poll is due 60 s after the reconnection at the earliest, and that follows the restart)."""
    with connect(fault_db_url) as conn:
        project, owner = ready_shop(conn)
        emails = seed_signups(conn, project, "restart", 3)
        booted = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    proc = senders(fault_db_url, sink.port, poll_seconds=POLL_SECONDS, name="restart")
    with connect(fault_db_url) as monitor:
        wait_until(lambda: proc.alive() and idle_waiting(monitor, proc.app_name), "the sender to idle", 60)

    restart_started = time.monotonic()
    fault_cluster.restart()

    with connect(fault_db_url) as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > booted, "the server restarted"
        wait_until(lambda: proc.alive() and proc.count("listening") >= 2 and idle_waiting(conn, proc.app_name),
                   "the sender to reconnect, LISTEN again and wait", 15)
        assert proc.count("database_unavailable") >= 1, proc.tail()
        shown = preview(conn, project, owner, "onboard_users")
        assert shown["count"] == 3, shown
        run = create_run(conn, project, owner, "onboard_users", "after-restart")["runId"]
        left = restart_started + NOTIFY_BUDGET - time.monotonic()
        assert left > 1, "the restart took too long to tell the NOTIFY path from the poll"
        wait_until(lambda: proc.alive() and len(sink.accepted_ids()) >= 3, "the new run's mail (NOTIFY path)", left)
        wait_until(lambda: run_status(conn, run) == "succeeded", "the run to succeed")
        delivered = sorted(rcpt for _, _, rcpt, _ in sink.accepted)
        assert delivered == emails, delivered
        assert {s[0] for s in outbox_status(conn, [run]).values()} == {"sent"}
    assert proc.terminate() == 0, proc.tail()


# -- 3. SIGTERM while sending ----------------------------------------------------------------------

def test_sigterm_finishes_what_is_in_flight_and_releases_the_rest(conn, db_url, sink, senders):
    free = 10
    _, run, emails = onboarding_run(conn, "term", 120)
    sink.arm(0, trip_at=free, mode="stall")  # 10 mails go through, then every reply is held
    proc = senders(db_url, sink.port, name="term")

    def saturated():  # every worker in DATA waiting for its reply, and the local queue full again
        proc.alive()
        sending = conn.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = %s AND status = 'sending'",
                               (run,)).fetchone()[0]
        return len(sink.stalled_ids()) == CONCURRENCY and sending == CONCURRENCY + BATCH

    wait_until(saturated, "the workers to stall in flight with a full local queue", 60)
    in_flight = set(sink.stalled_ids())
    before = outbox_status(conn, [run])
    claimed = {m for m, s in before.items() if s[0] == "sending"}
    assert in_flight <= claimed
    main = main_backend(conn, proc.app_name)
    assert main is not None, backends(conn, proc.app_name)

    os.kill(proc.pid, signal.SIGTERM)
    # Its main loop ends (and closes its LISTENing session) once it has taken the signal: only then
    # are the held replies given, so that the workers finish the message in hand and take no other.
    wait_until(lambda: proc.alive() and main[0] not in {b[0] for b in backends(conn, proc.app_name)},
               "the sender to stop its main loop")
    sink.release.set()
    assert proc.proc.wait(timeout=60) == 0, proc.tail()
    assert proc.count("sender_stopped") == 1, proc.tail()

    after = outbox_status(conn, [run])
    sent = {m for m, s in after.items() if s[0] == "sent"}
    accepted = set(sink.accepted_ids())
    assert len(accepted) == free + CONCURRENCY
    assert sent == accepted, "sent exactly what the sink accepted: the first ten and the four in flight"
    assert in_flight <= sent
    assert not any(s[0] == "sending" for s in after.values())
    released = claimed - in_flight
    assert len(released) == BATCH
    for m in released:
        status, _, attempts, lease_owner, lease_expires_at = after[m]
        assert (status, attempts, lease_owner, lease_expires_at) == ("queued", 0, None, None), (m, after[m])
    released_logged = sum(line.get("count", 0) for line in proc.lines() if line.get("event") == "messages_released")
    assert released_logged == BATCH, proc.tail()
    assert run_status(conn, run) == "running"

    # A new sender delivers the rest, each address exactly once overall.
    sink.arm(1)
    again = senders(db_url, sink.port, name="term-after")
    wait_until(lambda: again.alive() and run_status(conn, run) == "succeeded", "the run to succeed", 60)
    assert again.terminate() == 0, again.tail()
    assert Counter(rcpt for _, _, rcpt, _ in sink.accepted) == Counter(emails)


# -- 4. a database restart while mail is in flight ------------------------------------------------------

@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_while_mail_is_in_flight_loses_and_duplicates_nothing(fault_cluster, fault_db_url, sink, senders,
                                                                                  mode):
    """The replies of the messages in flight are held across a restart — a fast one, or a crash
    (`pg_ctl stop -m immediate`, recovery from the WAL): the recorder then writes the workers' 250s
    on a dead session, must retry on a new one (record_retry), and nothing is lost or sent twice."""
    free = 10
    with connect(fault_db_url) as conn:
        durable_commits(conn)  # as in production: the crash must not take what was committed
        _, run, emails = onboarding_run(conn, "inflight", 150)
    sink.arm(0, trip_at=free, mode="stall")
    proc = senders(fault_db_url, sink.port, name="inflight")
    with connect(fault_db_url) as monitor:
        def saturated():
            proc.alive()
            sending = monitor.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = %s AND status = 'sending'",
                                      (run,)).fetchone()[0]
            return len(sink.stalled_ids()) == CONCURRENCY and sending == CONCURRENCY + BATCH

        wait_until(saturated, "the workers to stall in flight with a full local queue", 60)
        # The recorder, which already wrote outcomes (its last statement: the pipeline's COMMIT),
        # holds a database session, broken by the restart.
        recorder_sessions = sum(1 for b in backends(monitor, proc.app_name)
                                if any(q in b[2] for q in ("record_sent", "start_messages", "COMMIT")))
        assert recorder_sessions == 1, backends(monitor, proc.app_name)
    fault_cluster.restart(mode)
    wait_until(lambda: proc.alive() and proc.count("listening") >= 2, "the sender to reconnect", 30)
    sink.release.set()
    with connect(fault_db_url) as conn:
        wait_until(lambda: proc.alive() and run_status(conn, run) == "succeeded", "the run to succeed", 60)
        assert {s[0] for s in outbox_status(conn, [run]).values()} == {"sent"}
    assert proc.count("record_retry") == recorder_sessions, proc.tail()
    assert Counter(rcpt for _, _, rcpt, _ in sink.accepted) == Counter(emails), "each address exactly once"
    assert proc.terminate() == 0, proc.tail()


# -- 5. a sender paused past its leases, then resumed: a zombie -------------------------------------

def test_a_sender_paused_past_its_leases_cannot_undo_the_work_of_the_one_that_took_over(conn, db_url, sink, senders):
    """Sender A's workers stall in flight, A is paused (SIGSTOP) and its leases lapse; B takes every
    message over and delivers the run. When A resumes, the relay's 250s for what it had in flight
    reach it: it records them (the mail did go out: a duplicate within the documented in-flight
    window, one per stalled worker), changes nothing B recorded, and starts none of the messages it
    had queued (their leases are B's now)."""
    _, run, emails = onboarding_run(conn, "zombie", 60)
    sink.arm(0, trip_at=10, mode="stall")
    a = senders(db_url, sink.port, name="zombie-a")

    def stalled():
        a.alive()
        return len(sink.stalled_ids()) == CONCURRENCY

    wait_until(stalled, "A's workers to stall in flight", 60)
    in_flight = set(sink.stalled_ids())
    os.kill(a.pid, signal.SIGSTOP)
    try:
        stalled_release = sink.release
        sink.arm(1)  # from now on the sink answers at once
        conn.execute("UPDATE runhub.outbox SET lease_expires_at = now() WHERE run_id = %s AND status = 'sending'", (run,))
        b = senders(db_url, sink.port, name="zombie-b")
        wait_until(lambda: b.alive() and run_status(conn, run) == "succeeded", "B to deliver the run", 60)
        recorded = conn.execute("SELECT id, status, sent_at, smtp_reply FROM runhub.outbox WHERE run_id = %s ORDER BY id",
                                (run,)).fetchall()
        stalled_release.set()  # the relay answers A's stalled mails: A reads the 250s when it resumes
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_until(lambda: a.alive() and a.count("message_sent") >= 10 + CONCURRENCY,
               "A to record the replies it was waiting for", 30)
    assert b.terminate() == 0, b.tail()
    assert a.terminate() == 0, a.tail()

    assert conn.execute("SELECT id, status, sent_at, smtp_reply FROM runhub.outbox WHERE run_id = %s ORDER BY id",
                        (run,)).fetchall() == recorded, "nothing B recorded was changed by A"
    delivered = Counter(rcpt for _, _, rcpt, _ in sink.accepted)
    assert set(delivered) == set(emails)
    twice = {m for m, n in Counter(m for _, m, _, _ in sink.accepted).items() if n > 1}
    assert twice <= in_flight, "only what A had in flight at the pause went out twice"
    assert all(n <= 2 for n in delivered.values())
    sent_events = conn.execute("SELECT count(*) FROM runhub.business_events WHERE event_type = 'onboarding_email_sent'"
                               " AND payload ->> 'workflowRunId' = %s", (run,)).fetchone()[0]
    assert sent_events == len(emails), "one *_email_sent event per message, however often it went out"
