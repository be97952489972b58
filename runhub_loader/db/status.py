"""`runhub status`: what is deployed, what is pending, how cron is doing, how big things are."""
from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from . import queries
from .api import Api
from ..assets import DEFAULT_SOURCE
from .cron import cron_state, job_prefix
from .deploy import code_checksum, create_run_counters_left, pending_migrations


def collect(database_url: str, source=DEFAULT_SOURCE) -> dict:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        deployed = conn.execute(queries.TABLE_EXISTS, ("runhub.deployments",)).fetchone()["ok"]
        report: dict = {"database": conn.info.dbname, "server": conn.info.parameter_status("server_version")}
        if not deployed:
            report["deployed"] = None
        else:
            last = conn.execute(queries.LAST_DEPLOYMENT).fetchone()
            report["deployed"] = last and {**last, "deployed_at": last["deployed_at"].isoformat()}
            report["code_matches_checkout"] = bool(last) and last["checksum"] == code_checksum(source)
            report["tables"] = _table_sizes(conn)
            report["queues"] = _queues(conn)
            report["plpython"] = _plpython(conn)
            report["create_run_counters_left"] = create_run_counters_left(conn)
        usable, reason, cron_db = cron_state(conn)
    report["pending_migrations"] = pending_migrations(database_url, source)
    report["cron"] = _cron(database_url, report["database"], usable, reason, cron_db)
    return report


def _table_sizes(conn) -> list[dict]:
    return conn.execute(queries.TABLE_SIZES).fetchall()


def _queues(conn) -> dict | None:
    """Runs and outbox messages by state, and the runs stuck in running for over 30 minutes."""
    if not conn.execute(queries.TABLE_EXISTS, ("runhub.workflow_runs",)).fetchone()["ok"]:
        return None
    runs = conn.execute(queries.RUN_QUEUE).fetchone()
    outbox = conn.execute(queries.OUTBOX_QUEUE).fetchone()
    stale = conn.execute(queries.STALE_RUNS).fetchall()
    bloat = conn.execute(queries.QUEUE_TABLE_BLOAT).fetchall()
    for row in bloat:
        vacuumed = max((t for t in (row.pop("last_autovacuum"), row.pop("last_vacuum")) if t), default=None)
        row["last_vacuum"] = vacuumed.isoformat() if vacuumed else None
    return {"runs": runs, "outbox": outbox, "stale_runs": stale, "digests": _digests(conn), "relays": _relays(conn),
            "queue_tables": bloat}


def _relays(conn) -> list[dict] | None:
    """The SMTP relay as each sender of the last hour last found it (runhub.relay_status)."""
    if not conn.execute(queries.TABLE_EXISTS, ("runhub.relay_status",)).fetchone()["ok"]:
        return None
    rows = conn.execute(queries.RECENT_RELAY_STATUS).fetchall()
    for row in rows:
        for key in ("down_since", "updated_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows


def _digests(conn) -> dict | None:
    """Projects with digests on, how many are due (overdue by over an hour: the job is not
    running), and the digest job's last runs (runhub.job_runs)."""
    if not conn.execute(queries.TABLE_EXISTS, ("runhub.job_runs",)).fetchone()["ok"]:
        return None
    projects = conn.execute(queries.DIGEST_PROJECTS).fetchone()
    runs = conn.execute(queries.LAST_DIGEST_JOB_RUNS).fetchall()
    for run in runs:
        run["started_at"] = run["started_at"].isoformat()
        run["duration_ms"] = float(run["duration_ms"])
    return {**projects, "last_runs": runs}


def _plpython(conn) -> dict:
    try:
        return Api(conn).plpython_runtime()
    except psycopg.Error as exc:
        return {"error": str(exc).strip()}


def _cron(database_url: str, dbname: str, usable: bool, reason: str, cron_db: str) -> dict:
    if not usable:
        return {"available": False, "reason": reason}
    try:
        with psycopg.connect(make_conninfo(database_url, dbname=cron_db), autocommit=True,
                             row_factory=dict_row) as cron:
            jobs = cron.execute(queries.CRON_JOB_HEALTH, (job_prefix(dbname),)).fetchall()
    except psycopg.Error as exc:
        return {"available": False, "reason": str(exc).strip()}
    for job in jobs:
        if job["last_start"] is not None:
            job["last_start"] = job["last_start"].isoformat()
    return {"available": True, "database": cron_db, "jobs": jobs}


# Dead rows worth an operator's look: enough to slow the queue's scans and a share autovacuum
# should long since have cleared (runhub sets it to vacuum the queue tables at 1-2 %; a new install's
# "3 dead of 4 rows" is neither).
BLOAT_FLOOR_ROWS = 10_000
BLOAT_FLOOR_SHARE = 0.2


def is_bloated(live: int, dead: int) -> bool:
    return dead >= BLOAT_FLOOR_ROWS and dead >= BLOAT_FLOOR_SHARE * (live + dead)


def render(report: dict) -> str:
    lines = [f"database     {report['database']} (PostgreSQL {report['server']})"]
    deployed = report.get("deployed")
    if not deployed:
        lines.append("deployed     nothing yet: run `runhub deploy`")
    else:
        match = "matches this checkout" if report.get("code_matches_checkout") else "differs from this checkout"
        lines.append(f"deployed     runhub {deployed['version']} at {deployed['deployed_at']} "
                     f"by {deployed['deployed_by']} (code {deployed['checksum'][:12]}, {match})")
    pending = report["pending_migrations"]
    lines.append(f"migrations   {len(pending)} pending" + (": " + ", ".join(pending) if pending else ""))
    if deployed:
        if report.get("create_run_counters_left"):
            lines.append(f"counters     {report['create_run_counters_left']:,} project(s) still count create_run calls in "
                         "a sequence of their own: run `runhub deploy` to move them onto rows")
        py = report["plpython"]
        lines.append("plpython     " + (f"error: {py['error']}" if "error" in py
                                         else f"Python {py['python']}, modules {', '.join(py['modules'])}"))
    queues = report.get("queues")
    if queues:
        runs, outbox = queues["runs"], queues["outbox"]
        oldest = f", oldest queued {runs['oldest_queued_s']} s" if runs["oldest_queued_s"] is not None else ""
        lines.append(f"runs         {runs['queued']} queued, {runs['executing']} executing, "
                     f"{runs['delivering']} delivering{oldest}")
        lines.append(f"outbox       {outbox['due']} due, {outbox['retrying']} waiting to retry, {outbox['sending']} sending")
        stale = queues["stale_runs"]
        lines.append(f"stuck runs   {len(stale)} running for over 30 minutes" + (":" if stale else ""))
        for run in stale:
            lines.append(f"  {run['id']}  {run['action_id']:18} {run['running_s'] // 60} min, attempt {run['attempts']}")
        bloated = [t for t in queues.get("queue_tables") or [] if is_bloated(t["live"], t["dead"])]
        if not bloated:
            lines.append(f"dead rows    none to worry about (no queue table has {BLOAT_FLOOR_ROWS:,} dead rows "
                         f"and {BLOAT_FLOOR_SHARE:.0%} of its rows)")
        for table in bloated:
            share = table["dead"] / (table["live"] + table["dead"])
            lines.append(f"dead rows    {table['table']}: {table['dead']:,} beside {table['live']:,} live ({share:.0%}), "
                         f"last vacuumed {table['last_vacuum'] or 'never'}: see docs/operations.md")
        for relay in queues.get("relays") or []:
            if relay["down_since"]:
                lines.append(f"relay        {relay['relay']} unreachable since {relay['down_since']} "
                             f"(sender {relay['worker']}: {relay['last_error']})")
            else:
                lines.append(f"relay        {relay['relay']} reachable (sender {relay['worker']}, {relay['updated_at']})")
        digests = queues.get("digests")
        if digests:
            enabled = f"~{digests['enabled']:,} (estimate)" if digests["enabled_estimated"] else f"{digests['enabled']:,}"
            lines.append(f"digests      {enabled} project(s) on, {digests['due']:,} due, "
                         f"{digests['overdue']:,} overdue by over an hour")
            for run in digests["last_runs"]:
                counts = ", ".join(f"{v} {k}" for k, v in run["counts"].items() if v)
                lines.append(f"  job at {run['started_at']}: {run['duration_ms']:.0f} ms, {counts or 'nothing'}")
    cron = report["cron"]
    if not cron["available"]:
        lines.append(f"cron         unavailable: {cron['reason']}")
    else:
        lines.append(f"cron         {len(cron['jobs'])} job(s) in database {cron['database']}")
        for job in cron["jobs"]:
            last = (f"last {job['last_status']} at {job['last_start']}" if job["last_status"] else "not run yet")
            failed = (f"; {job['failed_24h']} failed in 24 h, last: {(job['last_error'] or '').strip()[:120]}"
                      if job.get("failed_24h") else "")
            lines.append(f"  {job['jobname']:40} {job['schedule']:14} {'active' if job['active'] else 'paused'}  {last}{failed}")
    if deployed:
        lines.append("tables")
        for t in report["tables"]:
            lines.append(f"  {t['table']:28} ~{t['estimated_rows']:>10} rows  {t['total_size']:>10}")
    return "\n".join(lines)
