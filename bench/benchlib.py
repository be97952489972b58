"""What the benchmarks share: their database on the kept embedded cluster, and the load average."""
from __future__ import annotations

import os
from pathlib import Path

import psycopg

from runhub_loader.embedded import Cluster


def database_url(args, database: str) -> str:
    """args.database_url, else `database` on the embedded cluster in args.home (started if needed),
    created when missing and, with args.rebuild, dropped first (its data set is reloaded)."""
    if args.database_url:
        return args.database_url
    cluster = Cluster(Path(args.home).resolve())
    cluster.start(fast=True)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if args.rebuild and exists:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{database}"')
    return cluster.url(database)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
