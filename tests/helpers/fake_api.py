"""An in-memory stand-in for the typed door (runhub_loader/db/api.py) with the methods the sender's
parts call, each with Api's own signature (tests/unit/test_fake_api.py holds them equal), and a log
of the calls that tests wait on."""
from __future__ import annotations

import contextlib
import threading

import psycopg

from helpers.db import DEADLINE_SECONDS


def message(id: int, template: str = "onboarding", run: str | None = "run-1", project: str = "project-1",
            attempts: int = 0) -> dict:
    """A message as claim_messages gives it (the fields the sender's parts read)."""
    return {"id": id, "messageId": f"<{id}@runhub>", "projectId": project, "runId": run, "template": template,
            "locale": "en", "toEmail": f"user{id}@example.com", "attempts": attempts, "variables": {}}


def own_connections(api: "FakeApi"):
    """What a part calls for a connection of its own (the shape of session.open_api): `api` each time."""
    return lambda: contextlib.nullcontext(api)


class CallLog:
    """Every call the fake took, in order, as (method, args); tests wait on them, never sleep."""

    def __init__(self):
        self._calls: list[tuple[str, tuple]] = []
        self._changed = threading.Condition()

    def add(self, name: str, args: tuple) -> None:
        with self._changed:
            self._calls.append((name, args))
            self._changed.notify_all()

    def names(self) -> list[str]:
        """The methods called, in order."""
        with self._changed:
            return [called for called, _ in self._calls]

    def of(self, name: str) -> list[tuple]:
        """The arguments of each call of `name`."""
        with self._changed:
            return [args for called, args in self._calls if called == name]

    def wait_for(self, name: str, count: int = 1) -> list[tuple]:
        """The arguments of each call of `name`, once there are `count` of them."""
        self.wait_until(lambda: len(self.of(name)) >= count, f"{count} call(s) of {name}")
        return self.of(name)

    def wait_until(self, condition, what: str) -> None:
        """Until `condition()` holds, checked at each call (fails at the deadline, never hangs)."""
        with self._changed:
            if not self._changed.wait_for(condition, DEADLINE_SECONDS):
                raise AssertionError(f"timed out waiting for {what}: {self._calls}")


class FakeApi:
    """An outbox in memory: `due` messages are claimed (leased to a worker), released or deferred
    back to `due`; `runs_due` and `digests_due` are counts that process_runs and run_due_digests
    take. With `reachable` False every call raises as a lost database would."""

    def __init__(self, due: list[dict] = (), runs_due: int = 0, digests_due: int = 0):
        self.due = list(due)
        self.leased: dict[int, dict] = {}  # id -> message, claimed and neither released nor deferred
        self.runs_due = runs_due
        self.digests_due = digests_due
        self.relays: dict[str, str | None] = {}  # relay -> its last reported error (None: up)
        self.reachable = True
        self.calls = CallLog()
        self.lock = threading.Lock()

    def _called(self, name: str, *args) -> None:
        self.calls.add(name, args)
        if not self.reachable:
            raise psycopg.OperationalError("the fake database is unreachable")

    # -- Api's methods ---------------------------------------------------------------------------------
    def sender_idle(self) -> bool:
        self._called("sender_idle")
        with self.lock:
            return not self.due and not self.leased and not self.runs_due

    def process_runs(self, limit: int) -> int:
        self._called("process_runs", limit)
        with self.lock:
            done = min(self.runs_due, limit)
            self.runs_due -= done
            return done

    def run_due_digests(self) -> int:
        self._called("run_due_digests")
        with self.lock:
            queued, self.digests_due = self.digests_due, 0
            return queued

    def claim_messages(self, worker: str, limit: int, lease_seconds: int) -> list[dict]:
        self._called("claim_messages", worker, limit, lease_seconds)
        with self.lock:
            claimed, self.due = self.due[:limit], self.due[limit:]
            self.leased.update((m["id"], m) for m in claimed)
            return claimed

    def release_messages(self, worker: str, ids: list[int]) -> int:
        self._called("release_messages", worker, ids)
        return self._give_back(ids)

    def defer_messages(self, worker: str, ids: list[int], reason: str) -> int:
        self._called("defer_messages", worker, ids, reason)
        return self._give_back(ids)

    def report_relay(self, worker: str, relay: str, error: str | None) -> None:
        self._called("report_relay", worker, relay, error)
        self.relays[relay] = error

    def heartbeat_messages(self, worker: str, ids: list[int], lease_seconds: int) -> None:
        self._called("heartbeat_messages", worker, ids, lease_seconds)

    def _give_back(self, ids: list[int]) -> int:
        with self.lock:
            back = [self.leased.pop(i) for i in ids if i in self.leased]
            self.due = back + self.due
            return len(back)
