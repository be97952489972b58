"""`runhub status --proxy URL`: the proxy's partitions and directory, and every shard's own status
(queues, stuck runs, cron jobs, relays) in one report."""
from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from ..db import status as shard_status
from . import queries
from .keys import keys_of
from .shards import connect, operator_url


def is_proxy_database(url: str) -> bool:
    """Whether url names a proxy database (False when it cannot be reached: the caller says why)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            return bool(conn.execute(queries.IS_PROXY_DATABASE).fetchone()[0])
    except psycopg.Error:
        return False


def collect(proxy_url: str) -> dict:
    with psycopg.connect(proxy_url, autocommit=True, row_factory=dict_row) as proxy:
        if not proxy.execute(queries.IS_PROXY_DATABASE).fetchone()["ok"]:
            raise RuntimeError("not a runhub proxy database: `runhub proxy deploy` it first")
        deployment = proxy.execute(queries.LAST_PROXY_DEPLOYMENT).fetchone()
        partitions = proxy.execute(queries.PARTITIONS).fetchall()
        counts = {r["partition"]: r["projects"] for r in proxy.execute(queries.DIRECTORY_COUNTS).fetchall()}
        moves = proxy.execute(queries.RECENT_MOVES).fetchall()
    shards, key_sets = [], []
    for row in partitions:
        shard = {"partition": row["partition"], "connstr": row["connstr"], "projects": counts.get(row["partition"], 0)}
        try:
            with connect(row["connstr"], proxy_url, autocommit=True) as conn:
                key_sets.append((keys_of(conn), conn.execute(queries.HOLDOUT_KEY).fetchone()))
                shard["in_doubt_moves"] = [gid for (gid,) in conn.execute(queries.PREPARED_MOVES, ("runhub_move:%",))]
            shard["status"] = shard_status.collect(operator_url(row["connstr"], proxy_url))
        except psycopg.Error as exc:
            shard["error"] = str(exc).strip()
        shards.append(shard)
    return {"proxy": {"deployment": deployment, "recent_moves": moves,
                      "keys_shared": len({repr(k) for k in key_sets}) <= 1},
            "shards": shards}


def render(report: dict) -> str:
    proxy = report["proxy"]
    deployment = proxy["deployment"] or {}
    lines = [f"proxy: {len(report['shards'])} partition(s), {deployment.get('functions', 0)} API functions "
             f"(runhub {deployment.get('version', '?')}, deployed {deployment.get('deployed_at', 'never')})"]
    if not proxy["keys_shared"]:
        lines.append("  KEYS DIFFER between shards (unsubscribe or holdout): links of a moved shop may fail on its "
                     "new shard, a run executed again there may hold out others; `runhub proxy rotate-secret` "
                     "shares the unsubscribe keys")
    for move in proxy["recent_moves"]:
        state = f"paused {move['paused_ms']} ms" if move["finished_at"] else "not finished (in progress, failed or stopped)"
        if move["finished_at"] and not move["source_cleaned_at"]:
            state += "; its events still on the old shard: run `runhub proxy recover`"
        lines.append(f"  move {move['project']}: {move['from_partition']} -> {move['to_partition']} "
                     f"at {move['started_at']:%Y-%m-%d %H:%M:%S}, {state}")
    for shard in report["shards"]:
        lines.append("")
        lines.append(f"== partition {shard['partition']}: {shard['connstr']} ({shard['projects']} project(s) in the directory)")
        if "error" in shard:
            lines.append(f"  UNREACHABLE: {shard['error']}")
            continue
        for gid in shard["in_doubt_moves"]:
            lines.append(f"  IN-DOUBT MOVE {gid}: run `runhub proxy recover`")
        lines.extend("  " + line for line in shard_status.render(shard["status"]).splitlines())
    return "\n".join(lines)
