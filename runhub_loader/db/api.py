"""runhub's SQL API as Python calls: one method per SQL function the package calls, each statement
written here once. The package's other statements (reads of its own tables, deployment) are the
named queries of `queries.py`; tests/unit/test_queries.py holds that no SQL is written anywhere else.

An Api wraps a connection it is given and neither commits nor closes it: the caller owns the
transaction. Results come back as the functions return them (jsonb as dicts and lists)."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from psycopg.types.json import Jsonb


class Api:
    def __init__(self, conn):
        self.conn = conn

    def _value(self, statement: str, params: tuple = ()) -> Any:
        row = self.conn.execute(statement, params).fetchone()
        return next(iter(row.values())) if isinstance(row, dict) else row[0]  # whatever the connection's row factory

    # -- the sender's (runhub_sender) ----------------------------------------------------------------
    def sender_idle(self) -> bool:
        return self._value("SELECT runhub.sender_idle()")

    def process_runs(self, limit: int) -> int:
        return self._value("SELECT runhub.process_runs(%s)", (limit,))

    def run_due_digests(self) -> int:
        """The digest job's catch-up (a procedure: it commits between its batches)."""
        return self._value("CALL runhub.run_due_digests(NULL)")

    def claim_messages(self, worker: str, limit: int, lease_seconds: int) -> list[dict]:
        rows = self.conn.execute("SELECT runhub.claim_messages(%s, %s, %s)", (worker, limit, lease_seconds)).fetchall()
        return [message for (message,) in rows]

    def release_messages(self, worker: str, ids: list[int]) -> int:
        return self._value("SELECT runhub.release_messages(%s, %s)", (worker, ids))

    def defer_messages(self, worker: str, ids: list[int], reason: str) -> int:
        return self._value("SELECT runhub.defer_messages(%s, %s, %s)", (worker, ids, reason))

    def report_relay(self, worker: str, relay: str, error: str | None) -> None:
        self.conn.execute("SELECT runhub.report_relay(%s, %s, %s)", (worker, relay, error))

    def heartbeat_messages(self, worker: str, ids: list[int], lease_seconds: int) -> None:
        self.conn.execute("SELECT runhub.heartbeat_messages(%s, %s, %s)", (worker, ids, lease_seconds))

    def record_failure(self, message: int, worker: str, code: int | None, reply: str) -> str:
        return self._value("SELECT runhub.record_failure(%s, %s, %s, %s)", (message, worker, code, reply))

    # -- operators' (the deploying login) -------------------------------------------------------------
    def rotate_unsubscribe_key(self, revoke_previous: bool) -> dict:
        return self._value("SELECT runhub.rotate_unsubscribe_key(%s)", (revoke_previous,))

    def attribute_payments(self, project: uuid.UUID | str, since: dt.datetime) -> int:
        return self._value("SELECT runhub.attribute_payments(%s, %s)", (project, since))

    def generate_digest(self, project: uuid.UUID | str, day: dt.date) -> dict | None:
        return self._value("SELECT runhub.generate_digest(%s, %s)", (project, day))

    def rebuild_customers(self, project) -> int:
        """runhub.customers recomputed from a project's events (after a load past ingest)."""
        return self._value("SELECT runhub.rebuild_customers(%s)", (project,))

    def plpython_runtime(self) -> dict:
        return self._value("SELECT runhub._plpython_runtime()")

    # -- the application's (runhub_app, runhub_ingest) -----------------------------------------------
    def create_project(self, name: str, owner: uuid.UUID | str, timezone: str, currency: str,
                       locale: str = "en", industry: str | None = None) -> uuid.UUID:
        return self._value("SELECT runhub.create_project(%s, %s, %s, %s, %s, %s)",
                           (name, owner, timezone, currency, locale, industry))

    def update_project_settings(self, project, actor, settings: dict) -> dict:
        return self._value("SELECT runhub.update_project_settings(%s, %s, %s)", (project, actor, Jsonb(settings)))

    def ingest_event(self, project, event: dict) -> dict:
        return self._value("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(event)))

    def ingest_events(self, project, events: list[dict]) -> list[dict]:
        return self._value("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(events)))

    def list_actions(self, project, actor) -> list[dict]:
        return self._value("SELECT runhub.list_actions(%s, %s)", (project, actor))

    def preview(self, project, actor, action: str, params: dict) -> dict:
        return self._value("SELECT runhub.preview(%s, %s, %s, %s)", (project, actor, action, Jsonb(params)))

    def create_run(self, project, actor, action: str, idempotency_key: str, params: dict,
                   client_requested_at: dt.datetime | None = None, preview: uuid.UUID | str | None = None) -> dict:
        return self._value("SELECT runhub.create_run(%s, %s, %s, %s, %s, %s, %s)",
                           (project, actor, action, idempotency_key, Jsonb(params), client_requested_at, preview))

    def add_member(self, project, actor, user, role: str) -> dict:
        return self._value("SELECT runhub.add_member(%s, %s, %s, %s)", (project, actor, user, role))

    def explain_attribution(self, project, actor, payment: int) -> dict:
        return self._value("SELECT runhub.explain_attribution(%s, %s, %s)", (project, actor, payment))

    def start_messages(self, worker: str, ids: list[int]) -> list[int]:
        return [started for (started,) in self.conn.execute("SELECT runhub.start_messages(%s, %s)", (worker, ids)).fetchall()]

    def record_sent_many(self, worker: str, ids: list[int], replies: list[str]) -> list[tuple[int, str]]:
        return self.conn.execute("SELECT * FROM runhub.record_sent_many(%s, %s, %s)", (worker, ids, replies)).fetchall()

    def get_run(self, project, actor, run) -> dict:
        return self._value("SELECT runhub.get_run(%s, %s, %s)", (project, actor, run))

    def workflow_outcome(self, project, actor, run) -> dict | None:
        return self._value("SELECT runhub.workflow_outcome(%s, %s, %s)", (project, actor, run))
