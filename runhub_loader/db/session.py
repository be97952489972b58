"""The sender's connections: autocommit, no prepared statements (safe behind a pooler)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from .api import Api


def connect(url: str) -> psycopg.Connection:
    """A sender connection: autocommit, and no prepared statements, so that it works through a pooler
    in transaction mode (PgBouncer hands each transaction any server connection; a statement
    psycopg prepared on one is missing on the next). The calls are one-line function calls: their
    work is planned inside the server, so preparing them saved nothing."""
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


@contextmanager
def open_api(url: str) -> Iterator[Api]:
    """The typed door on a sender connection of its own, closed when the block ends: for the
    sender's rare calls apart from its loop (a release, the relay's state, heartbeats)."""
    with connect(url) as conn:
        yield Api(conn)
