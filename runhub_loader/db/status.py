"""`runhub status`: what is deployed, what is pending, how cron is doing, how big things are."""
from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from .assets import DEFAULT_SOURCE
from .cron import cron_state, job_prefix
from .deploy import code_checksum, pending_migrations


def collect(database_url: str, source=DEFAULT_SOURCE) -> dict:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        deployed = conn.execute("SELECT to_regclass('runhub.deployments') IS NOT NULL AS ok").fetchone()["ok"]
        report: dict = {"database": conn.info.dbname, "server": conn.info.parameter_status("server_version")}
        if not deployed:
            report["deployed"] = None
        else:
            last = conn.execute(
                "SELECT version, checksum, deployed_at, deployed_by FROM runhub.deployments ORDER BY id DESC LIMIT 1"
            ).fetchone()
            report["deployed"] = last and {**last, "deployed_at": last["deployed_at"].isoformat()}
            report["code_matches_checkout"] = bool(last) and last["checksum"] == code_checksum(source)
            report["tables"] = _table_sizes(conn)
            report["queues"] = _queues(conn)
            report["plpython"] = _plpython(conn)
        usable, reason, cron_db = cron_state(conn)
    report["pending_migrations"] = pending_migrations(database_url, source)
    report["cron"] = _cron(database_url, report["database"], usable, reason, cron_db)
    return report


def _table_sizes(conn) -> list[dict]:
    return conn.execute(
        """SELECT c.relname AS table, coalesce(s.n_live_tup, 0) AS estimated_rows,
                  pg_size_pretty(pg_total_relation_size(c.oid)) AS total_size
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
            WHERE n.nspname = 'runhub' AND c.relkind = 'r'
            ORDER BY pg_total_relation_size(c.oid) DESC, c.relname"""
    ).fetchall()


def _queues(conn) -> dict | None:
    """Runs and outbox messages by state, and the runs stuck in running for over 30 minutes."""
    if not conn.execute("SELECT to_regclass('runhub.workflow_runs') IS NOT NULL AS ok").fetchone()["ok"]:
        return None
    runs = conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status = 'running' AND executed_at IS NULL) AS executing,
                  count(*) FILTER (WHERE status = 'running' AND executed_at IS NOT NULL) AS delivering,
                  extract(epoch FROM now() - min(requested_at) FILTER (WHERE status = 'queued'))::int AS oldest_queued_s
             FROM runhub.workflow_runs WHERE status IN ('queued', 'running')""").fetchone()
    outbox = conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'queued' AND next_attempt_at <= now()) AS due,
                  count(*) FILTER (WHERE status = 'queued' AND next_attempt_at > now()) AS retrying,
                  count(*) FILTER (WHERE status = 'sending') AS sending
             FROM runhub.outbox WHERE status IN ('queued', 'sending')""").fetchone()
    stale = conn.execute(
        """SELECT id::text, action_id, attempts, extract(epoch FROM running_for)::int AS running_s
             FROM runhub.stale_runs ORDER BY started_at LIMIT 10""").fetchall()
    bloat = conn.execute(
        """SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead, last_autovacuum, last_vacuum
             FROM pg_stat_user_tables
            WHERE schemaname = 'runhub' AND relname IN ('outbox', 'workflow_runs', 'workflow_run_recipients', 'previews')
            ORDER BY relname""").fetchall()
    for row in bloat:
        vacuumed = max((t for t in (row.pop("last_autovacuum"), row.pop("last_vacuum")) if t), default=None)
        row["last_vacuum"] = vacuumed.isoformat() if vacuumed else None
    return {"runs": runs, "outbox": outbox, "stale_runs": stale, "digests": _digests(conn), "relays": _relays(conn),
            "queue_tables": bloat}


def _relays(conn) -> list[dict] | None:
    """The SMTP relay as each sender of the last hour last found it (runhub.relay_status)."""
    if not conn.execute("SELECT to_regclass('runhub.relay_status') IS NOT NULL AS ok").fetchone()["ok"]:
        return None
    rows = conn.execute(
        """SELECT worker, relay, down_since, last_error, updated_at FROM runhub.relay_status
            WHERE updated_at > now() - interval '1 hour' ORDER BY down_since NULLS LAST, worker""").fetchall()
    for row in rows:
        for key in ("down_since", "updated_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows


def _digests(conn) -> dict | None:
    """Projects with digests on, how many are due (overdue by over an hour: the job is not
    running), and the digest job's last runs (runhub.job_runs)."""
    if not conn.execute("SELECT to_regclass('runhub.job_runs') IS NOT NULL AS ok").fetchone()["ok"]:
        return None
    projects = conn.execute(
        """SELECT count(*) FILTER (WHERE digest_enabled) AS enabled,
                  count(*) FILTER (WHERE digest_next_at <= now()) AS due,
                  count(*) FILTER (WHERE digest_next_at <= now() - interval '1 hour') AS overdue
             FROM runhub.projects""").fetchone()
    runs = conn.execute(
        """SELECT started_at, duration_ms, counts FROM runhub.job_runs
            WHERE job = 'digests' ORDER BY started_at DESC LIMIT 3""").fetchall()
    for run in runs:
        run["started_at"] = run["started_at"].isoformat()
        run["duration_ms"] = float(run["duration_ms"])
    return {**projects, "last_runs": runs}


def _plpython(conn) -> dict:
    try:
        return conn.execute("SELECT runhub._plpython_runtime() AS r").fetchone()["r"]
    except psycopg.Error as exc:
        return {"error": str(exc).strip()}


def _cron(database_url: str, dbname: str, usable: bool, reason: str, cron_db: str) -> dict:
    if not usable:
        return {"available": False, "reason": reason}
    try:
        with psycopg.connect(make_conninfo(database_url, dbname=cron_db), autocommit=True,
                             row_factory=dict_row) as cron:
            jobs = cron.execute(
                """SELECT j.jobname, j.schedule, j.active, d.status AS last_status,
                          d.start_time AS last_start, d.return_message AS last_message,
                          f.failed_24h, f.last_error
                     FROM cron.job j
                     LEFT JOIN LATERAL (SELECT status, start_time, return_message FROM cron.job_run_details r
                                         WHERE r.jobid = j.jobid ORDER BY r.runid DESC LIMIT 1) d ON true
                     LEFT JOIN LATERAL (SELECT count(*) AS failed_24h,
                                               (array_agg(r.return_message ORDER BY r.runid DESC))[1] AS last_error
                                          FROM cron.job_run_details r
                                         WHERE r.jobid = j.jobid AND r.status = 'failed'
                                           AND r.start_time > now() - interval '24 hours') f ON true
                    WHERE starts_with(j.jobname, %s) ORDER BY j.jobname""",
                (job_prefix(dbname),)).fetchall()
    except psycopg.Error as exc:
        return {"available": False, "reason": str(exc).strip()}
    for job in jobs:
        if job["last_start"] is not None:
            job["last_start"] = job["last_start"].isoformat()
    return {"available": True, "database": cron_db, "jobs": jobs}


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
        for table in queues.get("queue_tables") or []:
            total = table["live"] + table["dead"]
            share = f"{100 * table['dead'] / total:.0f} %" if total else "0 %"
            lines.append(f"bloat        {table['table']}: {table['dead']} dead of {total} rows ({share}), "
                         f"last vacuumed {table['last_vacuum'] or 'never'}")
        for relay in queues.get("relays") or []:
            if relay["down_since"]:
                lines.append(f"relay        {relay['relay']} unreachable since {relay['down_since']} "
                             f"(sender {relay['worker']}: {relay['last_error']})")
            else:
                lines.append(f"relay        {relay['relay']} reachable (sender {relay['worker']}, {relay['updated_at']})")
        digests = queues.get("digests")
        if digests:
            lines.append(f"digests      {digests['enabled']} project(s) on, {digests['due']} due, "
                         f"{digests['overdue']} overdue by over an hour")
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
