"""What the benchmarks share: their command line, their database on the kept embedded cluster,
VACUUM of what they loaded, and the load average."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

import psycopg

from runhub_loader.db.embedded import Cluster


def parser(doc: str, database_help: str, rebuild: bool = True, home: str = ".runhub-bench") -> argparse.ArgumentParser:
    """A bench's command line: its docstring as the help, --database-url (a scratch database:
    `database_help` says what the bench does to it), --home and, for a kept data set, --rebuild."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--database-url", help=f"a scratch database to use instead of the embedded one ({database_help})")
    p.add_argument("--home", default=home, help=f"embedded cluster folder [{home}]")
    if rebuild:
        p.add_argument("--rebuild", action="store_true", help="drop and reload the data set (embedded cluster)")
    return p


def vacuum_analyze(conn, tables) -> None:
    """VACUUM (ANALYZE) each table (outside a transaction, whatever the connection's mode)."""
    vacuum(conn, tables, analyze=True)


def vacuum(conn, tables, analyze: bool = False) -> None:
    """VACUUM each table, with ANALYZE if asked (outside a transaction, whatever the connection's mode)."""
    autocommit = conn.autocommit
    conn.commit()
    conn.autocommit = True
    try:
        for table in tables:
            conn.execute(f"VACUUM {'(ANALYZE) ' if analyze else ''}{table}")
    finally:
        conn.autocommit = autocommit


def database_url(args, database: str, durable: bool = False) -> str:
    """args.database_url, else `database` on the embedded cluster in args.home (started if needed),
    created when missing and, with args.rebuild, dropped first (its data set is reloaded). A cluster
    is durable or not as it was created (a bench that depends on it prints durability())."""
    if args.database_url:
        return args.database_url
    cluster = Cluster(Path(args.home).resolve())
    cluster.start(fast=not durable)  # durable: fsync and synchronous_commit on, as deployed (set when created)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if args.rebuild and exists:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{database}"')
    return cluster.url(database)


def durability(conn) -> str:
    """The server's fsync and synchronous_commit, for the record of what a figure was measured on."""
    fsync, sync = conn.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')").fetchone()
    return f"fsync={fsync} synchronous_commit={sync}"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def kept_data_set(admin, meta: str, partial: str, wanted: dict) -> bool:
    """Whether a bench's kept data set is loaded: False when none is; True when its `meta` table
    holds the `wanted` values (column: value); stops the bench when a load did not finish (the
    `partial` table is there without `meta`) or the data set is another one (--rebuild)."""
    if not admin.execute("SELECT to_regclass(%s) IS NOT NULL", (meta,)).fetchone()[0]:
        if admin.execute("SELECT to_regclass(%s) IS NOT NULL", (partial,)).fetchone()[0]:
            raise SystemExit("an earlier load of the data set did not finish: run with --rebuild (or a fresh --database-url)")
        return False
    found = dict(zip(wanted, admin.execute(f"SELECT {', '.join(wanted)} FROM {meta}").fetchone()))
    if found != wanted:
        raise SystemExit(f"the data set is {found}, this bench wants {wanted}: run with --rebuild (or a fresh --database-url)")
    return True


def record_loaded_mail_sent(conn, run_keys: str) -> None:
    """For the loaded runs whose idempotency key is LIKE `run_keys`: each recipient's message, sent
    (SMTP 250) when its recipient row was last updated, and its *_email_sent event, as the sender
    records them."""
    conn.execute("""
        INSERT INTO runhub.outbox (id, project_id, run_id, recipient_id, template, locale, to_email, to_name, message_id,
                                   status, attempts, next_attempt_at, started_at, sent_at, smtp_code, smtp_reply,
                                   created_at)
        SELECT rc.id, rc.project_id, rc.run_id, rc.id, a.template, coalesce(rc.locale, 'en'), rc.email, rc.name,
               '<' || rc.run_id || '.' || rc.id || '@runhub>', 'sent', 1, rc.created_at, rc.updated_at,
               rc.updated_at, 250, '250 2.0.0 Ok: queued', rc.created_at
          FROM runhub.workflow_run_recipients rc
          JOIN runhub.workflow_runs r ON r.id = rc.run_id
          JOIN runhub.actions a ON a.id = r.action_id
         WHERE r.idempotency_key LIKE %(keys)s""", {"keys": run_keys})
    conn.execute("""
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, customer_name, amount_cents, currency, payload)
        SELECT rc.project_id, a.sent_event_type, o.sent_at, 'mail:' || o.message_id, rc.cart_id, rc.email, rc.name,
               rc.amount_cents, rc.currency,
               jsonb_strip_nulls(jsonb_build_object('workflowRunId', rc.run_id, 'recipientEmail', rc.email,
                   'cartId', rc.cart_id, 'abandonedAmountCents', rc.amount_cents, 'currency', rc.currency,
                   'recoveryLink', rc.link, 'messageId', o.message_id))
          FROM runhub.outbox o
          JOIN runhub.workflow_run_recipients rc ON rc.id = o.recipient_id
          JOIN runhub.workflow_runs r ON r.id = rc.run_id
          JOIN runhub.actions a ON a.id = r.action_id
         WHERE r.idempotency_key LIKE %(keys)s""", {"keys": run_keys})


# -- bench/run's table -----------------------------------------------------------------------------

RESULTS_ENV = "RUNHUB_BENCH_RESULTS"


def measured_commit() -> str:
    """The commit a figure was measured at (`+` when the tree had uncommitted changes besides
    bench/RESULTS.md): bench/run keeps the rows of benches it did not re-run, so each row says."""
    repo = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!bench/RESULTS.md"], capture_output=True, text=True).stdout.strip()
    return (head or "?") + ("+" if dirty else "")


def record(bench: str, figure: str, baseline: str, ratios, target: str, met: bool, note: str = "") -> None:
    """One row of bench/run's table (a JSON line appended to $RUNHUB_BENCH_RESULTS, when bench/run
    set it): what was measured, against what, the ratio's median and spread over the rounds (a
    single number where there is one), the target and whether its median met it."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    values = [ratios] if isinstance(ratios, (int, float)) else list(ratios)
    row = {"bench": bench, "figure": figure, "baseline": baseline, "median": statistics.median(values),
           "min": min(values), "max": max(values), "rounds": len(values), "target": target, "met": bool(met),
           "note": note, "commit": measured_commit()}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
