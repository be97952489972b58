"""The sender's connections: autocommit, no prepared statements (safe behind a pooler)."""
from __future__ import annotations

import psycopg


def connect(url: str) -> psycopg.Connection:
    """A sender connection: autocommit, and no prepared statements, so that it works through a pooler
    in transaction mode (PgBouncer hands each transaction any server connection; a statement
    psycopg prepared on one is missing on the next). The calls are one-line function calls: their
    work is planned inside the server, so preparing them saved nothing."""
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)
