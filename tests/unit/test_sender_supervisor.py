"""`runhub sender --processes N`: the supervisor's policy, with stand-in sender processes (a few
lines of Python that say ready, then serve, die, exit or ignore SIGTERM as each test plans) so
that it runs without a database. The real senders under a supervisor, delivering, stopped and
killed: tests/db/test_sender_processes.py."""
from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest

from helpers.db import wait_until
from runhub_loader import logs
from runhub_loader.mail import processes
from runhub_loader.mail.daemon import SenderConfig
from runhub_loader.mail.smtp import SmtpConfig

# A stand-in sender: reads its settings as child_main does, records them (one file per start), then
# does what $FAKE_PLAN says for its index and start: fail (before ready), serve (until SIGTERM),
# die (SIGKILL right after ready), finish (exit 0 after ready), stuck (ignores SIGTERM).
FAKE_SENDER = r"""
import json, os, pathlib, signal, sys, threading
spec = json.loads(sys.stdin.readline())
state = pathlib.Path(os.environ["FAKE_STATE"])
index = spec["index"]
start = len(list(state.glob(f"{index}.*")))
(state / f"tmp{index}").write_text(json.dumps(spec))
os.replace(state / f"tmp{index}", state / f"{index}.{start}")  # whole when seen
plan = json.loads(os.environ["FAKE_PLAN"]).get(str(index), ["serve"])
what = plan[min(start, len(plan) - 1)]
if what == "fail":
    sys.exit(3)
stop = threading.Event()
signal.signal(signal.SIGTERM, signal.SIG_IGN if what == "stuck" else (lambda *_: stop.set()))
print(json.dumps({"ready": True, "metrics_port": None}), flush=True)
if what == "die":
    os.kill(os.getpid(), signal.SIGKILL)
if what == "finish":
    sys.exit(0)
stop.wait()
"""


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """(a supervisor factory over stand-in senders, its log lines, each process's starts); every
    supervisor made is stopped and waited for at the end, whatever the test did."""
    monkeypatch.setattr(processes, "CHILD_ARGV", [sys.executable, "-c", FAKE_SENDER])
    monkeypatch.setattr(processes, "FIRST_BACKOFF_S", 0.05)
    monkeypatch.setenv("FAKE_STATE", str(tmp_path))
    logs.setup("json")
    log = io.StringIO()
    logging.getLogger("runhub").handlers[0].setStream(log)
    made = []

    def make(plan: dict, processes_: int = 2, **config) -> processes.Supervisor:
        monkeypatch.setenv("FAKE_PLAN", json.dumps(plan))
        sender = SenderConfig(database_url="postgresql://nowhere/none", smtp=SmtpConfig("127.0.0.1", 25), **config)
        made.append(processes.Supervisor(sender, processes_))
        made[-1].thread = None
        return made[-1]

    def lines() -> list[dict]:
        return [json.loads(line) for line in log.getvalue().splitlines()]

    def starts(index: int) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(tmp_path.glob(f"{index}.*"))]

    yield make, lines, starts
    for supervisor in made:  # a failed test must not leave one restarting senders after it
        supervisor.stop()
        if supervisor.thread is not None:
            supervisor.thread.join(timeout=30)


def run_in_thread(supervisor: processes.Supervisor) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(supervisor.run()), daemon=True)
    supervisor.thread = thread
    thread.start()
    return thread, code


def events(lines: list[dict], event: str) -> list[dict]:
    return [line for line in lines if line["event"] == event]


def test_a_sender_process_that_dies_is_restarted_and_the_others_go_on(fake):
    make, lines, starts = fake
    supervisor = make({"1": ["die", "serve"]})
    thread, code = run_in_thread(supervisor)
    wait_until(lambda: len(starts(1)) == 2 and supervisor.slots[1].ready, "process 1 to be restarted and ready")
    supervisor.stop()
    thread.join(timeout=30)
    assert code == [0]
    assert len(starts(0)) == 1, "process 0 went on, never restarted"
    seen = lines()
    [died] = events(seen, "sender_process_died")
    assert (died["level"], died["process"], died["signal"], died["restart_in_s"]) == ("error", 1, "SIGKILL", 0.05)
    assert [(e["process"], e["restarts"]) for e in events(seen, "sender_process_started")] == [(0, 0), (1, 0), (1, 1)]
    assert sorted(e["process"] for e in events(seen, "sender_process_stopped")) == [0, 1]


def test_a_sender_that_keeps_dying_young_waits_longer_each_time(fake):
    make, lines, starts = fake
    supervisor = make({"0": ["die", "die", "die", "serve"]}, processes_=1)
    thread, code = run_in_thread(supervisor)
    wait_until(lambda: len(starts(0)) == 4 and supervisor.slots[0].ready, "the fourth start")
    supervisor.stop()
    thread.join(timeout=30)
    assert code == [0]
    assert [e["restart_in_s"] for e in events(lines(), "sender_process_died")] == [0.05, 0.1, 0.2]


def test_a_sender_process_that_cannot_start_stops_them_all_and_exits_1(fake):
    """As gunicorn does with a worker that fails to boot: starting it again would fail again."""
    make, lines, starts = fake
    supervisor = make({"1": ["fail"]})
    thread, code = run_in_thread(supervisor)
    thread.join(timeout=30)
    assert code == [1]
    assert len(starts(1)) == 1, "not restarted"
    seen = lines()
    [failed] = events(seen, "sender_process_failed_to_start")
    assert (failed["level"], failed["process"], failed["exit_code"]) == ("error", 1, 3)
    assert events(seen, "sender_processes_stopping")[0]["reason"] == "a sender process failed to start"
    assert [e["process"] for e in events(seen, "sender_process_stopped")] in ([0], [])  # 0 asked to stop: clean
    assert events(seen, "sender_processes_stopped")[0]["exit_code"] == 1


def test_until_idle_the_supervisor_exits_0_once_every_process_is_done(fake):
    make, lines, starts = fake
    supervisor = make({"0": ["finish"], "1": ["finish"]}, exit_when_idle=True)
    thread, code = run_in_thread(supervisor)
    thread.join(timeout=30)
    assert code == [0]
    assert len(starts(0)) == len(starts(1)) == 1, "a process done is not restarted"
    assert sorted(e["process"] for e in events(lines(), "sender_process_finished")) == [0, 1]


def test_a_process_that_does_not_stop_is_killed_after_its_lease_and_a_grace_and_the_exit_is_1(fake, monkeypatch):
    make, lines, _ = fake
    monkeypatch.setattr(processes, "STOP_GRACE_S", 0.2)
    supervisor = make({"1": ["stuck"]}, lease_seconds=0)
    thread, code = run_in_thread(supervisor)
    wait_until(lambda: all(slot.ready for slot in supervisor.slots), "both processes to be ready")
    supervisor.stop()
    thread.join(timeout=30)
    assert code == [1]
    seen = lines()
    assert [e["process"] for e in events(seen, "sender_process_killed")] == [1]
    [unclean] = events(seen, "sender_process_stopped_uncleanly")
    assert (unclean["process"], unclean["signal"]) == (1, "SIGKILL")
    assert [e["process"] for e in events(seen, "sender_process_stopped")] == [0]


def test_each_process_gets_its_share_of_the_rates_and_only_the_first_drives_runs(fake):
    make, _, starts = fake
    supervisor = make({"0": ["finish"], "1": ["finish"]}, exit_when_idle=True, rate=10.0, project_rate=1.0,
                      metrics_port=9464)
    supervisor._serve_metrics = lambda: None  # no port taken by a unit test
    thread, code = run_in_thread(supervisor)
    thread.join(timeout=30)
    assert code == [0]
    (first,), (second,) = starts(0), starts(1)
    assert (first["config"]["drive_runs"], second["config"]["drive_runs"]) == (True, False)
    for spec in (first, second):
        assert (spec["config"]["rate"], spec["config"]["project_rate"]) == (5.0, 0.5)
        assert spec["config"]["metrics_port"] is None and spec["serve_metrics"] is True
        assert spec["log_format"] == "json"


def test_the_settings_go_on_stdin_never_on_the_command_line():
    """argv is anyone's to read (ps): the database and SMTP URLs carry passwords."""
    assert not any("postgresql" in arg or "smtp" in arg for arg in processes.CHILD_ARGV)
    assert processes.CHILD_ARGV[1] == "-P"  # no working directory first on sys.path
