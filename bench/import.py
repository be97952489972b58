"""Import benchmark: `runhub import` (JSON lines through ingest_events, in batches) against COPY of the
same rows into the same table.

    .venv/bin/python bench/import.py                 # 1,000,000 events, 3 rounds, embedded cluster in .runhub-bench
    .venv/bin/python bench/import.py --events 200000 --rounds 5

Each round writes the same shop history (checkouts, payments and leads over a year, 1 customer in 5
returning) as JSON lines, then, in a fresh project each, side by side (which goes first alternates):
  import  runhub_loader.importer.import_events over the file: parse, batch, validate and store
          through runhub.ingest_events, as `runhub import` does;
  copy    COPY of the same rows — every column ingest stores — into runhub.business_events from a
          CSV made beforehand (not timed), with the table's triggers (customers kept, payments
          attributed) as they fire for any insert.
Prints events/s of each and the ratio import/copy per round, their median and spread (goal >= 0.5).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import database_url, durability, loadavg, record  # noqa: E402
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.importer import import_events  # noqa: E402

DATABASE = "runhub_bench_import"
GOAL = 0.5
COLUMNS = ("project_id", "event_type", "occurred_at", "received_at", "idempotency_key", "correlation_id",
           "customer_email", "customer_name", "customer_locale", "amount_cents", "currency", "payload")


def history(n: int, seed: int = 1) -> list[dict]:
    rng, start = random.Random(seed), datetime(2025, 12, 1, tzinfo=timezone.utc)
    events = []
    for i in range(n):
        kind = rng.choices(["checkout_started", "payment_succeeded", "lead_created"], [5, 3, 2])[0]
        cart = f"cart-{i // 2}"
        body = {"type": kind, "occurredAt": (start + timedelta(seconds=i * 31)).isoformat(),
                "idempotencyKey": f"imp-{i}", "customer": {"email": f"c{rng.randrange(max(n // 5, 1))}@example.com"}}
        if kind != "lead_created":
            body.update(correlationId=cart, amountCents=rng.randrange(500, 20000), currency="EUR",
                        payload={"cartId": cart})
        events.append(body)
    return events


def copy_rows(events: list[dict], project: str) -> str:
    """The rows ingest would store, as CSV for COPY (made before the clock starts)."""
    out, now = io.StringIO(), datetime.now(timezone.utc).isoformat()
    writer = csv.writer(out)
    for e in events:
        writer.writerow([project, e["type"], e["occurredAt"], now, e["idempotencyKey"], e.get("correlationId", ""),
                         e["customer"]["email"], "", "", e.get("amountCents", ""), e.get("currency", ""),
                         json.dumps(e.get("payload", {}))])
    return out.getvalue()


def timed_copy(url: str, project: str, rows: str) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY runhub.business_events ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv, NULL '')") as copy:
            copy.write(rows)
        conn.commit()
        return time.perf_counter() - started


def timed_import(url: str, project: str, path: Path) -> float:
    started = time.perf_counter()
    with path.open(encoding="utf-8") as lines:
        report = import_events(url, project, lines)
    elapsed = time.perf_counter() - started
    if report.refused_count:
        raise SystemExit(f"the import refused {report.refused_count} events: {dict(report.refused)}")
    return elapsed


def new_project(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return str(conn.execute("SELECT runhub.create_project('Import', %s, 'UTC', 'EUR', 'en')",
                                (uuid.uuid4(),)).fetchone()[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", help="a scratch database (runhub is deployed there; projects are added)")
    p.add_argument("--home", default=".runhub-bench")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    args.rebuild = True
    url = database_url(args, DATABASE)
    deploy(url, schedule_cron=False)
    events = history(args.events)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "history.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
        with psycopg.connect(url) as conn:
            print(f"{args.events:,} events ({path.stat().st_size / 2**20:,.0f} MiB of JSON lines); "
                  f"{durability(conn)}; load average {loadavg()}", flush=True)
        ratios = []
        for r in range(args.rounds):
            copy_project, import_project = new_project(url), new_project(url)
            rows = copy_rows(events, copy_project)
            sides = [("copy", lambda: timed_copy(url, copy_project, rows)),
                     ("import", lambda: timed_import(url, import_project, path))]
            took = {name: run() for name, run in (sides if r % 2 == 0 else sides[::-1])}
            rates = {name: args.events / seconds for name, seconds in took.items()}
            ratios.append(rates["import"] / rates["copy"])
            print(f"round {r + 1}: import {rates['import']:,.0f} events/s, copy {rates['copy']:,.0f} events/s, "
                  f"ratio {ratios[-1]:.2f}", flush=True)
    median = statistics.median(ratios)
    record("import", f"runhub import, {args.events:,} events", "COPY of the same rows", ratios, f">= {GOAL}", median >= GOAL)
    print(f"import / copy: {median:.2f} (spread {min(ratios):.2f}..{max(ratios):.2f}, {len(ratios)} rounds; "
          f"goal >= {GOAL}: {'met' if median >= GOAL else 'NOT met'})")
    return 0 if median >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
