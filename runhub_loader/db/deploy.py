"""`runhub deploy`: migrations, `sql/` and the PL/Python bundle in one transaction, then cron."""
from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from yoyo import get_backend, read_migrations

from .. import __version__, logs
from ..constants import LOCALES
from ..assets import CODE_FOLDERS, DEFAULT_SOURCE, catalog_folder
from . import queries
from .cron import CronReport, register_cron_jobs
from .plpy_bundle import bundle_statements

log = logs.get("deploy")


class DeployError(RuntimeError):
    """The deploy failed and changed nothing in the target database's schema."""


class DeployIncomplete(RuntimeError):
    """The deploy committed, but a step after its transaction stopped; deploying again finishes it."""


@dataclass
class DeployResult:
    version: str
    checksum: str
    applied_migrations: list[str] = field(default_factory=list)
    changed: bool = False
    counters_retired: int = 0
    cron: CronReport | None = None


def code_checksum(source: Path) -> str:
    """sha256 over every deployable file's path and content, in a fixed order."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((source / folder).rglob("*")):
            if path.is_file() and path.suffix in (".sql", ".py"):
                digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    for path in sorted(catalog_folder(source).glob("messages.*.json")):  # runhub.texts comes from them
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def yoyo_url(database_url: str) -> str:
    """yoyo wants postgresql+psycopg://user:pass@host:port/db with extra options as query args."""
    params = conninfo_to_dict(database_url)
    user = params.pop("user", "")
    password = params.pop("password", "")
    dbname = params.pop("dbname", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    query = dict(params)
    netloc = ""
    if user:
        netloc = _url_quote(user)
        if password:
            netloc += ":" + _url_quote(password)
        netloc += "@"
    if host and not host.startswith("/"):
        netloc += host + (f":{port}" if port else "")
    else:
        if host:
            query["host"] = host
        if port:
            query["port"] = port
    querystring = "&".join(f"{k}={_url_quote(str(v))}" for k, v in query.items())
    return f"postgresql+psycopg://{netloc}/{dbname}" + (f"?{querystring}" if querystring else "")


def _url_quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def sql_files(source: Path) -> list[Path]:
    return sorted((source / "sql").glob("*.sql"))


def _last_checksum(conn) -> str | None:
    exists = conn.execute(queries.TABLE_EXISTS, ("runhub.deployments",)).fetchone()[0]
    if not exists:
        return None
    row = conn.execute(queries.LAST_DEPLOYED_CHECKSUM).fetchone()
    return row[0] if row else None


def pending_migrations(database_url: str, source: Path = DEFAULT_SOURCE) -> list[str]:
    backend = get_backend(yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(source / "migrations")))]
    finally:
        backend.connection.close()


def deploy(database_url: str, source: Path = DEFAULT_SOURCE, schedule_cron: bool = True) -> DeployResult:
    source = Path(source).resolve()
    checksum = code_checksum(source)
    result = DeployResult(version=__version__, checksum=checksum)
    with logs.bound(deploy_id=str(uuid.uuid4())):
        log.info("deploy_started", source=str(source), version=__version__, checksum=checksum[:12])
        backend = get_backend(yoyo_url(database_url))
        try:
            migrations = read_migrations(str(source / "migrations"))
            backend.ensure_internal_schema_updated()
            with backend.lock():
                pending = backend.to_apply(migrations)
                if not pending and _last_checksum(backend.connection) == checksum:
                    log.info("deploy_up_to_date")
                else:
                    _apply_all(backend, pending, source, checksum)
                    result.changed = True
                    result.applied_migrations = [m.id for m in pending]
        finally:
            backend.connection.close()
        try:
            result.counters_retired = retire_create_run_counters(database_url)
        except psycopg.Error as exc:
            log.error("counters_retire_failed", error=str(exc).strip())
            raise DeployIncomplete("deployed, but moving the create_run counters off their sequences stopped: "
                                   f"{str(exc).strip()}; run `runhub deploy` again to finish") from exc
        if schedule_cron:
            result.cron = register_cron_jobs(database_url)
        log.info("deploy_finished", changed=result.changed, migrations=result.applied_migrations)
    return result


# Projects' pre-0018 counter sequences retired per transaction: each holds about two locks (the
# sequence's, dropped, and its row's), far below a stock server's lock table (~6,400 slots).
RETIRE_BATCH = 500
RETIRE_PROGRESS_SECONDS = 5.0
RETIRE_LOCK_TIMEOUT = "30s"  # a project row held longer than this stops the step (a later deploy goes on)


def create_run_counters_left(conn) -> int:
    """Projects still counting create_run calls in a sequence of their own (made before migration
    0018); 0 on a database deployed before the function that counts them existed."""
    cur = conn.cursor(row_factory=tuple_row)
    if not cur.execute(queries.FUNCTION_EXISTS, ("runhub._create_run_counters_left()",)).fetchone()[0]:
        return 0
    return cur.execute(queries.CREATE_RUN_COUNTERS_LEFT).fetchone()[0]


def retire_create_run_counters(database_url: str, batch: int = RETIRE_BATCH) -> int:
    """Move every project still counting its create_run calls in a sequence of its own (made
    before migration 0018) onto its row, a batch a transaction, after the deploy committed: one
    transaction for all of them would hold a lock per project. Resumable (a stopped deploy's next
    run goes on); a no-op deploy pays one index probe of pg_class. Returns how many it retired."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        left = create_run_counters_left(conn)
        if not left:
            return 0
        if conn.execute(queries.LOCK_TIMEOUT_UNSET).fetchone()[0]:
            conn.execute(queries.SET_LOCK_TIMEOUT, (RETIRE_LOCK_TIMEOUT,))  # never hang behind a stuck session
        log.info("counters_retiring", left=left, batch=batch)
        done, after, last_report = 0, None, time.monotonic()
        while True:
            retired, after = conn.execute(queries.RETIRE_CREATE_RUN_COUNTERS, (after, batch)).fetchone()
            done += retired
            if after is None:
                break
            if time.monotonic() - last_report >= RETIRE_PROGRESS_SECONDS:
                log.info("counters_retiring", done=done, left=max(left - done, 0))
                last_report = time.monotonic()
        log.info("counters_retired", done=done)
        return done


def _apply_all(backend, pending, source: Path, checksum: str) -> None:
    """Everything in one transaction: any failure leaves the database as it was."""
    conn = backend.connection
    backend.begin()
    step = "extensions"
    try:
        _ensure_extensions(conn)
        for migration in pending:
            step = f"migration {migration.id}"
            log.info("migration_applying", migration=migration.id)
            migration.process_steps(backend, "apply")  # a savepoint inside our transaction
            backend.mark_one(migration, log=False)
            backend.log_migration(migration, "apply")
        _note_defined_functions(conn)
        step = "plpython bundle"  # first: SQL functions may call the wrappers, and grants come last
        for statement, params in bundle_statements(source):
            conn.execute(statement, params)
        step = "texts"
        _install_texts(conn, source)
        for path in sql_files(source):
            step = f"sql/{path.name}"
            conn.execute(path.read_text())
        step = "dropping functions no longer defined"
        _drop_stale_functions(conn)
        step = "recording the deployment"
        conn.execute(queries.RECORD_DEPLOYMENT, (__version__, checksum, [m.id for m in pending]))
        backend.commit()
    except Exception as exc:
        backend.rollback()
        log.error("deploy_failed", step=step, error=str(exc).strip())
        raise DeployError(f"deploy failed at {step}; nothing was changed: {str(exc).strip()}") from exc


def _install_texts(conn, source: Path) -> None:
    """The mail's catalogs, every locale, into runhub.texts: what the API answers owners in (an older
    checkout's schema has no such table)."""
    if not conn.execute(queries.TABLE_EXISTS, ("runhub.texts",)).fetchone()[0]:
        return
    conn.execute(queries.CLEAR_TEXTS)
    for locale in LOCALES:
        catalog = (catalog_folder(source) / f"messages.{locale}.json").read_text(encoding="utf-8")
        conn.execute(queries.INSERT_TEXTS, (locale, catalog))


def _note_defined_functions(conn) -> None:
    """Until _drop_stale_functions: note every function this deploy creates or replaces (an event
    trigger of the deploy's own transaction, on a function in pg_temp: nobody else ever sees it)."""
    conn.execute(queries.CREATE_DEFINED_FUNCTIONS_TABLE)
    conn.execute(queries.CREATE_DEFINED_FUNCTIONS_NOTE)
    conn.execute(queries.CREATE_DEFINED_FUNCTIONS_TRIGGER)


def _drop_stale_functions(conn) -> None:
    """Functions live in sql/ and the PL/Python bundle, and every deploy creates or replaces each
    of them. One in schema runhub that this deploy did not define is an old overload left by a
    signature change, or a function since removed: drop it, so that an upgraded database equals a
    fresh one. Without CASCADE: if something still uses it, the deploy fails and says what."""
    conn.execute(queries.DROP_DEFINED_FUNCTIONS_TRIGGER)
    stale = conn.execute(queries.STALE_FUNCTIONS).fetchall()
    for (name,) in stale:
        conn.execute(queries.DROP_ROUTINE.format(pgsql.SQL(name)))
        log.info("function_dropped", function=name)


def _ensure_extensions(conn) -> None:
    for name in ("plpython3u", "jsonb_plpython3u"):
        installed = conn.execute(queries.EXTENSION_INSTALLED, (name,)).fetchone()
        if not installed:
            conn.execute(queries.CREATE_EXTENSION.format(pgsql.Identifier(name)))
