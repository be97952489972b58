"""`runhub status`: what is deployed, what is pending, how cron is doing, how big things are."""
from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from .deploy import DEFAULT_SOURCE, code_checksum, cron_state, job_prefix, pending_migrations


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
                          d.start_time AS last_start, d.return_message AS last_message
                     FROM cron.job j
                     LEFT JOIN LATERAL (SELECT status, start_time, return_message FROM cron.job_run_details r
                                         WHERE r.jobid = j.jobid ORDER BY r.runid DESC LIMIT 1) d ON true
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
    cron = report["cron"]
    if not cron["available"]:
        lines.append(f"cron         unavailable: {cron['reason']}")
    else:
        lines.append(f"cron         {len(cron['jobs'])} job(s) in database {cron['database']}")
        for job in cron["jobs"]:
            last = (f"last {job['last_status']} at {job['last_start']}" if job["last_status"] else "not run yet")
            lines.append(f"  {job['jobname']:40} {job['schedule']:14} {'active' if job['active'] else 'paused'}  {last}")
    if deployed:
        lines.append("tables")
        for t in report["tables"]:
            lines.append(f"  {t['table']:28} ~{t['estimated_rows']:>10} rows  {t['total_size']:>10}")
    return "\n".join(lines)
