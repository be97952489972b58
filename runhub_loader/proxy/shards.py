"""The shards as the proxy's commands reach them: their addresses, the tables a project's rows are
in, and the block of ids each partition's sequences count in."""
from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import queries

# A project's rows, table by table, in an order that inserts parents before children (reverse to
# delete), each with the condition that picks them (%(project)s: the project), written so an index
# finds them: the outbox has no index on its project (its hot path pays for no index a move alone
# would use), so its rows are found through the run's recipients, or as the project's other mail;
# the credits through their runs. tests/db/test_proxy_move.py checks that every table with a
# project_id is here.
PROJECT_ROWS = "project_id = %(project)s"
OUTBOX_ROWS = ("id = ANY(ARRAY(SELECT o.id FROM runhub.outbox o WHERE o.project_id = %(project)s AND o.run_id IS NULL"
               " UNION ALL SELECT o.id FROM runhub.workflow_run_recipients r JOIN runhub.outbox o ON o.id = r.id"
               " WHERE r.project_id = %(project)s))")
CREDIT_ROWS = "run_id = ANY(ARRAY(SELECT w.id FROM runhub.workflow_runs w WHERE w.project_id = %(project)s))"
MOVED_TABLES = (
    ("projects", "id = %(project)s"),
    ("project_members", PROJECT_ROWS),
    ("execution_locks", PROJECT_ROWS),
    ("create_run_counts", PROJECT_ROWS),
    ("customers", PROJECT_ROWS),
    ("suppressions", PROJECT_ROWS),
    ("business_events", PROJECT_ROWS),
    ("previews", PROJECT_ROWS),
    ("workflow_runs", PROJECT_ROWS),
    ("workflow_run_recipients", PROJECT_ROWS),
    ("outbox", OUTBOX_ROWS),
    ("workflow_attributions", CREDIT_ROWS),
    ("digests", PROJECT_ROWS),
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
