"""`runhub sender --processes N`: N sender processes under one supervisor.

One sender is bound by one core (rendering and SMTP in Python); N processes use N. Each is a full
`Sender` with its own worker id, database and SMTP sessions and leases, as N `runhub sender`
commands would be: the outbox's claims are `FOR UPDATE SKIP LOCKED` under a lease per worker and
every write checks that lease, so two never share a message. The supervisor:

- starts each from a fresh interpreter (`python -c`, child_main), never a fork: nothing of the
  supervisor (sessions, threads, locks) is copied into a sender. Its settings come on its stdin
  (not argv, which `ps` shows to everyone: the URLs carry passwords), its "ready" line on its
  stdout. Its stdin stays open: the end of it tells the sender its supervisor is gone (even killed
  with SIGKILL), and it stops as on SIGTERM.
- forwards SIGTERM and SIGINT: each sender stops as one alone does (finishes the mail in flight,
  releases what it claimed), then the supervisor exits 0, or 1 if one did not stop cleanly. Each
  sender has a process group of its own, so a terminal's Ctrl-C reaches the supervisor alone.
- restarts a sender that dies, as gunicorn restarts a worker, after a pause that doubles (1 s up to
  60 s) while it keeps dying within a minute of its start; the others go on meanwhile, and the dead
  one's messages come back when their leases lapse. One that dies before it is ready cannot start
  at all (a broken installation): starting it again would fail again, so all stop, exit 1. With
  --until-idle a sender that exits 0 is done, and the supervisor exits 0 once all are.
- does once what must not be done N times (_config_for): only sender 0 executes runs and catches
  up on digests; --rate and --project-rate are the command's, 1/N to each; the metrics are the
  supervisor's to serve (metrics.serve_processes).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import logs
from ..metrics import SenderProcessView, serve_processes
from .daemon import Sender, SenderConfig
from .smtp import SmtpConfig
from .wakeup import Wakeup

log = logs.get("supervisor")

# The folder runhub_loader is in: a sender process imports the very code its supervisor runs.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
# -P: neither the working directory nor a script's folder goes first on sys.path (a queue.py
# there would stand in for the standard library's).
CHILD_ARGV = [sys.executable, "-P", "-c",
              f"import sys; root = {PACKAGE_ROOT!r}; root in sys.path or sys.path.insert(0, root); "
              "from runhub_loader.mail.processes import child_main; sys.exit(child_main())"]

FIRST_BACKOFF_S = 1.0   # a dead sender is restarted after this, doubling while it keeps dying young
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 60.0   # one that ran this long before dying was healthy: back to FIRST_BACKOFF_S
STOP_GRACE_S = 90.0     # past its lease: a stopping sender waits a lease for its workers, then its recorder


@dataclass
class _Slot:
    """One sender's place: its current process, and what it went through across restarts."""

    index: int
    proc: subprocess.Popen | None = None
    ready: bool = False
    metrics_port: int | None = None
    started_at: float = 0.0
    output: bytes = b""
    restart_at: float | None = None  # monotonic time its restart is due
    next_pause: float | None = None  # before its next restart (None: the first pause)
    restarts: int = 0
    done: bool = False  # exited 0 under --until-idle


class Supervisor:
    def __init__(self, config: SenderConfig, processes: int, log_format: str = "json"):
        self.config = config
        self.log_format = log_format
        self.slots = [_Slot(i) for i in range(processes)]
        self.exit_code = 0
        self._stop_signal: int | None = None
        self._stopping_since: float | None = None
        self._selector = selectors.DefaultSelector()
        # A signal handler writes a byte here: the loop's select wakes at once.
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup, selectors.EVENT_READ, None)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def stop(self, signum: int = signal.SIGTERM, _frame=None) -> None:
        self._stop_signal = signum
        self._wakeup.wake()

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> int:
        log.info("sender_processes_starting", processes=len(self.slots), pid=os.getpid())
        server = self._serve_metrics()
        try:
            for slot in self.slots:
                self._start(slot)
            while not self._finished():
                self._step()
        finally:
            self._kill_all()  # only when leaving on an error: no sender outlives its supervisor unwatched
            if server is not None:
                server.shutdown()
                server.server_close()
            self._selector.close()
            self._wakeup.close()
        log.info("sender_processes_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _step(self) -> None:
        for key, _ in self._selector.select(self._timeout()):
            if key.data is None:
                self._wakeup.drain()
            else:
                self._read(key.data)
        if self._stop_signal is not None and self._stopping_since is None:
            self._begin_stop(signal.Signals(self._stop_signal).name)
        for slot in self.slots:  # an exit is normally seen as the end of its stdout; this is the fallback
            if slot.proc is not None and slot.proc.poll() is not None:
                self._exited(slot)
        self._restart_due()
        self._kill_overdue()

    def _timeout(self) -> float:
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        return max(0.0, min([1.0] + [at - time.monotonic() for at in due]))

    def _finished(self) -> bool:
        return all(slot.proc is None and (self._stopping_since is not None or slot.done) for slot in self.slots)

    # -- one sender process ---------------------------------------------------------------------------
    def _config_for(self, index: int) -> SenderConfig:
        """Sender `index`'s settings: the command's, but runs and digests driven by the first only,
        the rates shared, and its metrics served through the supervisor."""
        share = len(self.slots)
        return dataclasses.replace(
            self.config, drive_runs=index == 0, metrics_port=None,
            rate=self.config.rate / share if self.config.rate else None,
            project_rate=self.config.project_rate / share if self.config.project_rate else None)

    def _start(self, slot: _Slot) -> None:
        spec = {"index": slot.index, "log_format": self.log_format, "serve_metrics": self.config.metrics_port is not None,
                "config": dataclasses.asdict(self._config_for(slot.index))}
        proc = subprocess.Popen(CHILD_ARGV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0)
        slot.proc, slot.ready, slot.metrics_port, slot.output = proc, False, None, b""
        slot.started_at = time.monotonic()
        try:
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            proc.stdin.flush()  # and kept open: its end is how the sender learns the supervisor is gone
        except BrokenPipeError:  # it died at once: its exit says why
            pass
        self._selector.register(proc.stdout, selectors.EVENT_READ, slot)
        log.info("sender_process_started", process=slot.index, pid=proc.pid, restarts=slot.restarts)

    def _read(self, slot: _Slot) -> None:
        data = os.read(slot.proc.stdout.fileno(), 4096)
        if data:
            self._heard(slot, data)
            return
        # The end of its stdout: it is exiting. Normally gone at once; if not, _step's poll sees it go
        # (waiting here would hold up every other process's affairs).
        self._selector.unregister(slot.proc.stdout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            slot.proc.wait(timeout=1.0)
        if slot.proc.returncode is not None:
            self._exited(slot)

    def _heard(self, slot: _Slot, data: bytes) -> None:
        """Its ready line (anything else on its stdout is not the supervisor's business)."""
        slot.output += data
        while b"\n" in slot.output:
            line, slot.output = slot.output.split(b"\n", 1)
            if line.startswith(b'{"ready": true'):
                slot.ready, slot.metrics_port = True, json.loads(line).get("metrics_port")
                log.info("sender_process_ready", process=slot.index, pid=slot.proc.pid)

    def _exited(self, slot: _Slot) -> None:
        proc = slot.proc
        self._drain(slot)
        code = proc.wait()
        with contextlib.suppress(KeyError):  # unregistered already when its stdout ended first
            self._selector.unregister(proc.stdout)
        proc.stdout.close()
        with contextlib.suppress(BrokenPipeError):  # its end of the pipe is gone
            proc.stdin.close()
        was_ready, ran_s = slot.ready, time.monotonic() - slot.started_at
        slot.proc, slot.ready, slot.metrics_port = None, False, None
        fields = {"process": slot.index, "pid": proc.pid, "ran_s": round(ran_s, 1), **_exit_fields(code)}
        if self._stopping_since is not None:
            if code == 0 or (code == -signal.SIGTERM and not was_ready):  # stopped before it held anything
                log.info("sender_process_stopped", **fields)
            else:
                self.exit_code = 1
                log.error("sender_process_stopped_uncleanly", **fields)
        elif code == 0 and self.config.exit_when_idle:
            slot.done = True
            log.info("sender_process_finished", **fields)
        elif not was_ready:
            self.exit_code = 1
            log.error("sender_process_failed_to_start", **fields)
            self._begin_stop("a sender process failed to start")
        else:
            self._schedule_restart(slot, ran_s, fields)

    def _drain(self, slot: _Slot) -> None:
        """What an exited process wrote before it went (seen through poll(), its ready line may be unread)."""
        fd = slot.proc.stdout.fileno()
        with selectors.DefaultSelector() as probe:
            probe.register(fd, selectors.EVENT_READ)
            while probe.select(0) and (data := os.read(fd, 4096)):
                self._heard(slot, data)

    def _schedule_restart(self, slot: _Slot, ran_s: float, fields: dict) -> None:
        young = slot.next_pause is not None and ran_s < STABLE_AFTER_S  # dying again soon after a restart
        pause = slot.next_pause if young else FIRST_BACKOFF_S
        slot.restart_at = time.monotonic() + pause
        slot.next_pause = min(pause * 2, MAX_BACKOFF_S)
        log.error("sender_process_died", restart_in_s=pause, **fields)

    def _restart_due(self) -> None:
        if self._stopping_since is not None:
            return
        for slot in self.slots:
            if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                slot.restart_at = None
                slot.restarts += 1
                self._start(slot)

    # -- stopping -------------------------------------------------------------------------------------
    def _begin_stop(self, reason: str) -> None:
        self._stopping_since = time.monotonic()
        log.info("sender_processes_stopping", reason=reason)
        for slot in self.slots:
            slot.restart_at = None
            if slot.proc is not None:
                slot.proc.send_signal(signal.SIGTERM)

    def _kill_overdue(self) -> None:
        """A sender still running a lease and a grace past the stop is stuck: killed (its leases lapse)."""
        if self._stopping_since is None:
            return
        if time.monotonic() - self._stopping_since < self.config.lease_seconds + STOP_GRACE_S:
            return
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                log.error("sender_process_killed", process=slot.index, pid=slot.proc.pid,
                          reason=f"still running {self.config.lease_seconds + STOP_GRACE_S:.0f} s after the stop")
                slot.proc.kill()  # its exit is then seen as any other

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait()

    # -- metrics --------------------------------------------------------------------------------------
    def _serve_metrics(self):
        if self.config.metrics_port is None:
            return None
        server = serve_processes(self.config.metrics_port, self.config.metrics_host, self.config.database_url,
                                 self._views)
        log.info("metrics_serving", host=self.config.metrics_host, port=self.config.metrics_port)
        return server

    def _views(self) -> list[SenderProcessView]:
        """What the metrics endpoint reads (from its own thread: a snapshot of plain values)."""
        return [SenderProcessView(s.index, s.metrics_port if s.ready else None, s.restarts) for s in self.slots]


def _exit_fields(code: int) -> dict:
    return {"signal": signal.Signals(-code).name} if code < 0 else {"exit_code": code}


# -- the sender process's side -------------------------------------------------------------------------

def child_main() -> int:
    """A sender process: its settings from stdin, "ready" on stdout, then a sender until stopped."""
    spec = json.loads(_read_line(sys.stdin.fileno()))
    logs.setup(spec["log_format"], process=spec["index"])
    fields = spec["config"]
    sender = Sender(SenderConfig(**{**fields, "smtp": SmtpConfig(**fields["smtp"])}))
    sender.install_signal_handlers()
    threading.Thread(target=_stop_when_supervisor_is_gone, args=(sender,), name="supervisor-watch", daemon=True).start()
    server = sender.metrics.serve(0, "127.0.0.1") if spec["serve_metrics"] else None
    sys.stdout.write(json.dumps({"ready": True, "metrics_port": server.server_port if server else None}) + "\n")
    sys.stdout.flush()
    try:
        return sender.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def _read_line(fd: int) -> bytes:
    """A line of the raw descriptor, read byte by byte: sys.stdin's buffer would read ahead, and a
    thread blocked in it holds a lock that interpreter shutdown then cannot take (it aborts)."""
    line = b""
    while not line.endswith(b"\n") and (byte := os.read(fd, 1)):
        line += byte
    return line


def _stop_when_supervisor_is_gone(sender: Sender) -> None:
    """stdin ends only when the supervisor's end of it closes: it exited, or was killed."""
    while os.read(sys.stdin.fileno(), 4096):
        pass
    if not sender.stopping.is_set():
        log.warning("supervisor_gone")
        sender.stop()
