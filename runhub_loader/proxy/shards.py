"""The shards as the proxy's commands reach them: their addresses, the tables a project's rows are
in, and the block of ids each partition's sequences count in."""
from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import queries

# A project's rows, table by table, in an order that inserts parents before children (reverse to
# delete), each with the column that names the project. tests/db/test_proxy_move.py checks that
# every table with a project_id is here.
MOVED_TABLES = (
    ("projects", "id"),
    ("project_members", "project_id"),
    ("execution_locks", "project_id"),
    ("create_run_counts", "project_id"),
    ("customers", "project_id"),
    ("suppressions", "project_id"),
    ("business_events", "project_id"),
    ("previews", "project_id"),
    ("workflow_runs", "project_id"),
    ("workflow_run_recipients", "project_id"),
    ("outbox", "project_id"),
    ("workflow_attributions", "project_id"),
    ("digests", "project_id"),
)

# Each partition's sequences count in a block of their own, so a moved row keeps its id (ids are
# in links, Message-IDs and cursors) and never meets another's: partition p's ids are in
# [p * ID_BLOCK + 1, (p + 1) * ID_BLOCK - 1]; 2^48 ids a partition, for 32,767 partitions.
ID_BLOCK = 2 ** 48


def operator_url(connstr: str, proxy_url: str) -> str:
    """A partition's address with the operator's credentials: those of the proxy URL the command
    was given (user, password or passfile), else libpq's defaults."""
    credentials = {k: v for k, v in conninfo_to_dict(proxy_url).items() if k in ("user", "password", "passfile")}
    return make_conninfo(connstr, **credentials)


def connect(connstr: str, proxy_url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(operator_url(connstr, proxy_url), **kwargs)


def id_block(partition: int) -> tuple[int, int]:
    return partition * ID_BLOCK + 1, (partition + 1) * ID_BLOCK - 1


def give_id_blocks(conn, partition: int) -> list[str]:
    """Sets the moved tables' identity sequences to the partition's block. A sequence below its
    block (a fresh shard) restarts at the block's start; one inside keeps counting; one past it
    (a database that counted its ids as another partition's) is refused. Returns what changed."""
    low, high = id_block(partition)
    changed = []
    tables = [table for table, _ in MOVED_TABLES]
    for table, sequence, last, seq_min, seq_max in conn.execute(queries.ID_SEQUENCES, (tables,)).fetchall():
        if (seq_min, seq_max) == (low, high):
            continue
        if last > high:
            raise ValueError(f"{sequence} is at {last}, past partition {partition}'s ids ({low}..{high}): "
                             "this database's ids belong to another partition")
        if last < low:
            conn.execute(queries.SET_ID_BLOCK.format(sql.SQL(sequence), sql.Literal(low), sql.Literal(high), sql.Literal(low), sql.Literal(low)))
        else:
            conn.execute(queries.SET_ID_BLOCK_KEEP.format(sql.SQL(sequence), sql.Literal(low), sql.Literal(high)))
        changed.append(sequence)
    return changed
