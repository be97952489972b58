"""What the benchmarks share: their command line, their database on the kept embedded cluster,
VACUUM of what they loaded, and the load average."""
from __future__ import annotations

import argparse
import os
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
