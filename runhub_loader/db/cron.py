"""pg_cron: runhub.cron_jobs()'s jobs, scheduled by name in the cron database."""
from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import tuple_row

from .. import logs
from . import queries

log = logs.get("deploy")


@dataclass
class CronReport:
    available: bool
    reason: str = ""
    scheduled: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)  # what should run, for scheduling by other means



def cron_state(conn) -> tuple[bool, str, str]:
    """(usable, reason if not, cron database name) for the server behind conn."""
    preload, available, cron_db = conn.cursor(row_factory=tuple_row).execute(queries.CRON_STATE).fetchone()
    if not available:
        return False, "pg_cron is not installed on this server (package postgresql-15-cron)", cron_db
    if "pg_cron" not in [p.strip() for p in preload.split(",")]:
        return False, "pg_cron is not in shared_preload_libraries (needs a server restart)", cron_db
    return True, "", cron_db


def job_prefix(dbname: str) -> str:
    return f"runhub:{dbname}:"


def wanted_jobs(conn, dbname: str, cron_db: str) -> list[dict]:
    rows = conn.execute(queries.WANTED_CRON_JOBS)
    return [
        {"jobname": job_prefix(dbname) + name, "schedule": schedule, "command": command,
         "database": cron_db if in_cron_db else dbname}
        for name, schedule, command, in_cron_db in rows.fetchall()
    ]


def register_cron_jobs(database_url: str) -> CronReport:
    """Schedule this database's jobs by name; drop the ones it no longer wants. Idempotent."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        usable, reason, cron_db = cron_state(conn)
        jobs = wanted_jobs(conn, dbname, cron_db)
    report = CronReport(available=usable, reason=reason, jobs=jobs)
    if not usable:
        log.warning("cron_unavailable", reason=reason, jobs=[j["jobname"] for j in jobs])
        return report
    try:
        with psycopg.connect(make_conninfo(database_url, dbname=cron_db), autocommit=True) as cron:
            cron.execute(queries.CREATE_PG_CRON)
            existing = {row[0]: row[1:] for row in cron.execute(
                queries.SCHEDULED_CRON_JOBS, (job_prefix(dbname),)).fetchall()}
            for job in jobs:
                if existing.pop(job["jobname"], None) == (job["schedule"], job["command"], job["database"]):
                    report.unchanged.append(job["jobname"])
                    continue
                cron.execute(queries.SCHEDULE_CRON_JOB,
                             (job["jobname"], job["schedule"], job["command"], job["database"]))
                report.scheduled.append(job["jobname"])
            for jobname in existing:
                cron.execute(queries.UNSCHEDULE_CRON_JOB, (jobname,))
                report.removed.append(jobname)
    except psycopg.Error as exc:
        report.available = False
        report.reason = f"could not manage pg_cron in database {cron_db}: {str(exc).strip()}"
        log.warning("cron_unavailable", reason=report.reason)
    return report


def unschedule_cron_jobs(database_url: str) -> list[str]:
    """Remove every job of this database (used when a database is dropped, e.g. in tests)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        usable, _, cron_db = cron_state(conn)
    if not usable:
        return []
    with psycopg.connect(make_conninfo(database_url, dbname=cron_db), autocommit=True) as cron:
        if not cron.execute(queries.PG_CRON_INSTALLED).fetchone():
            return []
        rows = cron.execute(queries.SCHEDULED_CRON_JOB_NAMES, (job_prefix(dbname),))
        names = [r[0] for r in rows.fetchall()]
        for name in names:
            cron.execute(queries.UNSCHEDULE_CRON_JOB, (name,))
    return names
