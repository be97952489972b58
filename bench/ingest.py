"""Ingest against a plain insert: one event per transaction, and in bulk against the table's own floor.

    .venv/bin/python bench/ingest.py                 # embedded cluster in .runhub-bench-durable, database runhub_bench_ingest (rebuilt)
    .venv/bin/python bench/ingest.py --rounds 7 --events 3000 --batch 1000

A freshly deployed database with one project, on a cluster with PostgreSQL's default durability
(fsync and synchronous_commit on, as a deployment runs: one event per transaction pays its commit,
the plain insert too); checkout events with a customer, an amount and a payload, each with a fresh
idempotency key and its own instant. Per round, side by side in one session, rotating which goes
first, three ways:
  runhub  runhub.ingest_event / runhub.ingest_events (as a member of runhub_ingest): validation,
          idempotency, the customer kept up, payments attributed;
  plain   the same fields into a table with the same unique key and nothing else
          (public.bench_plain_events): `INSERT ... ON CONFLICT DO NOTHING`, one row or one
          `INSERT ... SELECT FROM jsonb_to_recordset(...)` a batch;
  table   the same statement into runhub.business_events itself, as a superuser, with no check:
          the floor its indexes, constraints and foreign key set (customers are not kept).
1. one event per transaction: runhub / plain, target >= 0.6 (table / plain printed);
2. in bulk, --batch events a call: runhub / table, target >= 0.8 (runhub / plain printed).
Prints events/s each way per round, the ratios, their medians and spread; exits 1 when a median
misses its target. Wall-clock on a shared machine: the load average is printed at start and end.
"""
from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runhub_loader.db.deploy import deploy  # noqa: E402
from benchlib import database_url, durability, loadavg, parser as bench_parser, record  # noqa: E402

DATABASE = "runhub_bench_ingest"
ROLE = "runhub_bench_ingest"
TARGETS = {"single": 0.6, "bulk": 0.8}  # runhub / plain one by one; runhub / table in bulk
PLAIN = """CREATE TABLE IF NOT EXISTS public.bench_plain_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, project_id uuid NOT NULL, event_type text NOT NULL,
    occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL DEFAULT now(), idempotency_key text NOT NULL,
    correlation_id text, customer_email text, customer_name text, amount_cents bigint, currency char(3),
    payload jsonb NOT NULL DEFAULT '{}', UNIQUE (project_id, idempotency_key))"""
# The same rows into the plain table (the baseline) or, bare, into runhub.business_events ({table}).
TABLES = {"plain": "public.bench_plain_events", "table": "runhub.business_events"}
ONE = """INSERT INTO {table} (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                             customer_email, customer_name, amount_cents, currency, payload)
         VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (project_id, idempotency_key) DO NOTHING
         RETURNING id"""
MANY = """INSERT INTO {table} (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                              customer_email, customer_name, amount_cents, currency, payload)
          SELECT %s, e."type", e."occurredAt", e."idempotencyKey", e."correlationId", e.customer ->> 'email',
                 e.customer ->> 'name', e."amountCents", e.currency, e.payload
            FROM jsonb_to_recordset(%s) AS e("type" text, "occurredAt" timestamptz, "idempotencyKey" text,
                 "correlationId" text, customer jsonb, "amountCents" bigint, currency char(3), payload jsonb)
          ON CONFLICT (project_id, idempotency_key) DO NOTHING"""


def events(n: int, tag: str) -> list[dict]:
    """n checkouts by 500 customers, each at its own instant (a customer's row changes with each)."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    return [{"type": "checkout_started", "occurredAt": (start + dt.timedelta(milliseconds=i)).isoformat(),
             "idempotencyKey": f"{tag}-{i}-{uuid.uuid4().hex[:8]}",
             "correlationId": f"cart-{i}", "customer": {"email": f"c{i % 500}@shop.example", "name": f"C {i % 500}"},
             "amountCents": 1000 + i, "currency": "EUR", "payload": {"cartId": f"cart-{i}", "items": i % 7}}
            for i in range(n)]


WAYS = ("runhub", "plain", "table")


def as_role(conn, way: str) -> None:
    """runhub's calls as a member of runhub_ingest; the bare table insert as the superuser (RLS)."""
    conn.execute("RESET ROLE" if way == "table" else f"SET ROLE {ROLE}")


def one_by_one(conn, project, batch: list[dict], way: str) -> float:
    as_role(conn, way)
    t0 = time.perf_counter()
    for e in batch:
        if way == "runhub":
            conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(e))).fetchone()
        else:
            conn.execute(ONE.format(table=TABLES[way]),
                         (project, e["type"], e["occurredAt"], e["idempotencyKey"], e["correlationId"],
                          e["customer"]["email"], e["customer"]["name"], e["amountCents"], e["currency"],
                          Jsonb(e["payload"]))).fetchone()
    return len(batch) / (time.perf_counter() - t0)


def in_bulk(conn, project, batch: list[dict], size: int, way: str) -> float:
    as_role(conn, way)
    t0 = time.perf_counter()
    for i in range(0, len(batch), size):
        chunk = Jsonb(batch[i:i + size])
        if way == "runhub":
            answers = conn.execute("SELECT runhub.ingest_events(%s, %s)", (project, chunk)).fetchone()[0]
            assert all("eventId" in a for a in answers), answers[:3]
        else:
            conn.execute(MANY.format(table=TABLES[way]), (project, chunk))
    return len(batch) / (time.perf_counter() - t0)


def side_by_side(rounds: int, run, baseline: str) -> tuple[list[float], list[float]]:
    """Per round each way once, the first way rotating; the ratios runhub/baseline and the other
    way's against plain (table/plain, or runhub/plain when the baseline is the table)."""
    ratios, others = [], []
    for r in range(rounds):
        order = WAYS[r % 3:] + WAYS[:r % 3]
        rates = {way: run(way, f"r{r}-{way}") for way in order}
        ratios.append(rates["runhub"] / rates[baseline])
        others.append((rates["table"] if baseline == "plain" else rates["runhub"]) / rates["plain"])
        print(f"    round {r + 1}: runhub {rates['runhub']:7.0f} ev/s, plain {rates['plain']:7.0f} ev/s, "
              f"table {rates['table']:7.0f} ev/s; runhub/{baseline} {ratios[-1]:.2f}", flush=True)
    return ratios, others


def report(label: str, ratios: list[float], target: float, other_label: str, others: list[float]) -> bool:
    med = statistics.median(ratios)
    figure, baseline = label.split(" / ", 1)
    record("ingest", figure, baseline, ratios, f">= {target}", med >= target,
           f"{other_label}: {statistics.median(others):.2f}")
    print(f"{label}: median {med:.2f}, spread {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds "
          f"(target >= {target}): {'ok' if med >= target else 'UNDER'}; {other_label}: median "
          f"{statistics.median(others):.2f}, spread {min(others):.2f}-{max(others):.2f}")
    return med >= target


def main() -> int:
    parser = bench_parser(__doc__, "superuser", rebuild=False, home=".runhub-bench-durable")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each way once per round [5]")
    parser.add_argument("--events", type=int, default=2000, help="events each way per round [2000]")
    parser.add_argument("--batch", type=int, default=1000, help="events a bulk call [1000]")
    args = parser.parse_args()
    if args.rounds < 1 or args.events < 100 or not 1 <= args.batch <= 5000:
        parser.error("--rounds >= 1, --events >= 100, --batch 1 to 5000")
    print(f"load average at start: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    args.rebuild = True
    url = database_url(args, DATABASE, durable=True)
    deploy(url, schedule_cron=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN)
        conn.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN "
                     f"CREATE ROLE {ROLE} NOLOGIN IN ROLE runhub_ingest; END IF; END $$")
        conn.execute(f"GRANT INSERT, SELECT ON public.bench_plain_events TO {ROLE}")
        project = conn.execute("SELECT runhub.create_project('Ingest shop', gen_random_uuid(), 'UTC', 'EUR')").fetchone()[0]
        print(f"server: {durability(conn)}")
        for way in WAYS:  # plans, caches
            one_by_one(conn, project, events(300, f"warm-{way}"), way)
        print(f"\n1. one event per transaction, {args.events} each way per round:")
        single = side_by_side(args.rounds, lambda way, tag: one_by_one(conn, project, events(args.events, tag), way), "plain")
        print(f"\n2. in bulk, {args.batch} events a call, {args.events} each way per round:")
        for way in WAYS:
            in_bulk(conn, project, events(args.batch, f"warm-bulk-{way}"), args.batch, way)
        bulk = side_by_side(args.rounds, lambda way, tag: in_bulk(conn, project, events(args.events, tag), args.batch, way), "table")
    ok = report("ingest_event / plain insert", single[0], TARGETS["single"],
                "the bare insert into runhub.business_events / plain insert", single[1])
    ok &= report("ingest_events / the bare batched insert into runhub.business_events", bulk[0], TARGETS["bulk"],
                 "ingest_events / batched plain insert", bulk[1])
    print(f"load average at end: {loadavg()}")
    print("reproduce: .venv/bin/python bench/ingest.py " + " ".join(sys.argv[1:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
