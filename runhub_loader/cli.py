"""The `runhub` command."""
from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import time
from pathlib import Path

import click

from . import __version__, logs
from .db.api import Api
from .db.roles import LOGIN_TIMEOUTS, NotAComponentLogin, apply_login_role
from .mail import defaults as sender_defaults
from .constants import (DEFAULT_LOCALE, LOCALES, MAX_CLAIM_BATCH, MAX_MESSAGE_LEASE_SECONDS, MIN_LEASE_SECONDS,
                        TEMPLATES)
from .db.embedded import Cluster, EmbeddedError, absolute_home, default_home
from .proxy.cli import register as register_proxy_commands

LOCALE_LIST = ", ".join(LOCALES)
ENV_HELP = "Defaults to $DATABASE_URL, else the embedded cluster in --home (started with `runhub db start`)."


class Context:
    def __init__(self, home: Path, database_url: str | None, log_format: str = "json"):
        self.home = home
        self.database_url_option = database_url  # --database-url or $DATABASE_URL, if given
        self.log_format = log_format  # what processes this one starts log in, too

    @property
    def cluster(self) -> Cluster:
        """The embedded cluster in --home, its home checked first (not a symlink, ours)."""
        cluster = Cluster(self.home)
        try:
            cluster.check_home()
        except EmbeddedError as exc:
            raise click.ClickException(str(exc)) from exc
        return cluster

    def database_url(self) -> str:
        if self.database_url_option:
            return self.database_url_option
        cluster = self.cluster
        if not cluster.running():
            raise click.ClickException(
                f"no database: set DATABASE_URL or --database-url, or start the embedded one "
                f"with `runhub db start` (home {self.home})")
        return cluster.url()


def _set_database_url(ctx: click.Context, _param, value: str | None) -> None:
    if value is not None:
        ctx.find_object(Context).database_url_option = value


def _set_home(ctx: click.Context, _param, value: Path | None) -> None:
    if value is not None:
        ctx.find_object(Context).home = absolute_home(value)


class Commands(click.Group):
    """A group whose every command also takes --database-url and --home after its name
    (`runhub deploy --database-url URL`, as yoyo and alembic users type it); given there, they win
    over the same options before it and over $DATABASE_URL / $RUNHUB_HOME."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group):
            cmd.params += [
                click.Option(["--database-url"], metavar="URL", expose_value=False, callback=_set_database_url,
                             help="As before the command: the PostgreSQL URL of the runhub database."),
                click.Option(["--home"], type=click.Path(file_okay=False, path_type=Path), expose_value=False,
                             callback=_set_home, help="As before the command: the embedded cluster's folder."),
            ]
        super().add_command(cmd, name)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="runhub")
@click.option("--database-url", envvar="DATABASE_URL", metavar="URL",
              help="PostgreSQL URL of the runhub database. " + ENV_HELP)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="RUNHUB_HOME",
              default=None, help="Folder of the embedded cluster [default: ./.runhub, or $RUNHUB_HOME].")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", envvar="RUNHUB_LOG_FORMAT",
              show_default=True, help="Format of the log lines on stderr.")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, home: Path | None, log_format: str) -> None:
    """runhub: Run Hub's back end inside PostgreSQL 15.

    Deploys the schema, SQL and PL/Python into a database, runs the embedded local PostgreSQL,
    and reports on what is deployed.
    """
    logs.setup(log_format)
    ctx.obj = Context(absolute_home(home) if home else default_home(), database_url, log_format)


# -- runhub db ----------------------------------------------------------------------------------

@main.group(cls=Commands)
def db() -> None:
    """The embedded local PostgreSQL 15 cluster (pg_cron preloaded, socket + loopback only)."""


@db.command("start")
@click.option("--fast", is_flag=True, help="fsync off: for throwaway test clusters only (applies when created).")
@click.pass_obj
def db_start(obj: Context, fast: bool) -> None:
    """Create the cluster if needed, start it, and create the runhub database."""
    try:
        obj.cluster.start(fast=fast)
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(obj.cluster.url())


@db.command("stop")
@click.pass_obj
def db_stop(obj: Context) -> None:
    """Stop the cluster (fast shutdown). Data is kept."""
    obj.cluster.stop()
    click.echo("stopped")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def db_status(obj: Context, as_json: bool) -> None:
    """Whether the cluster exists and runs, and where."""
    info = obj.cluster.describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key:12} {value}")
    sys.exit(0 if info["running"] else 3)


@db.command("url")
@click.option("--tcp", is_flag=True, help="The loopback TCP URL (with password) instead of the unix socket.")
@click.option("--dbname", default="runhub", show_default=True, help="Database name in the URL.")
@click.pass_obj
def db_url(obj: Context, tcp: bool, dbname: str) -> None:
    """Print a libpq URL of the embedded cluster."""
    try:
        cluster = obj.cluster
        click.echo(cluster.tcp_url(dbname) if tcp else cluster.url(dbname))
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from exc


@db.command("destroy")
@click.confirmation_option(prompt="Delete the embedded cluster and all its data?")
@click.pass_obj
def db_destroy(obj: Context) -> None:
    """Stop the cluster and delete its data."""
    obj.cluster.destroy()
    click.echo("destroyed")


# -- deploy / status ------------------------------------------------------------------------------

@main.command()
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Checkout to deploy (with migrations/, sql/, plpython/) [default: this package's].")
@click.option("--no-cron", is_flag=True, help="Do not register pg_cron jobs.")
@click.pass_obj
def deploy(obj: Context, source: Path | None, no_cron: bool) -> None:
    """Apply migrations, SQL and PL/Python in one transaction; register the pg_cron jobs.

    Deploying the same code twice changes nothing; a failed deploy changes nothing. After an
    upgrade from before migration 0018, it then moves each project's create_run count off its
    sequence, a batch a transaction (progress logged; a stopped deploy's next run goes on).
    """
    from .assets import DEFAULT_SOURCE
    from .db.deploy import DeployError, DeployIncomplete, deploy as run_deploy
    from .proxy.status import is_proxy_database

    if is_proxy_database(obj.database_url()):
        raise click.ClickException("this is a runhub proxy database: update it with `runhub proxy deploy` "
                                   "(and deploy runhub into each of its shards)")
    try:
        result = run_deploy(obj.database_url(), source or DEFAULT_SOURCE, schedule_cron=not no_cron)
    except (DeployError, DeployIncomplete) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.changed:
        applied = ", ".join(result.applied_migrations) or "none"
        click.echo(f"deployed runhub {result.version} (code {result.checksum[:12]}); migrations applied: {applied}")
    else:
        click.echo(f"up to date: runhub {result.version} (code {result.checksum[:12]})")
    if result.counters_retired:
        click.echo(f"create_run counters moved off their sequences: {result.counters_retired} project(s)")
    cron = result.cron
    if cron is None:
        return
    if cron.available:
        click.echo(f"cron: {len(cron.scheduled)} scheduled, {len(cron.unchanged)} unchanged, "
                   f"{len(cron.removed)} removed")
        return
    click.echo(f"cron: NOT scheduled: {cron.reason}.")
    click.echo("Everything else works. Run these on their schedules (UTC) by other means:")
    for job in cron.jobs:
        click.echo(f"  {job['schedule']:14} in database {job['database']}: {job['command']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--proxy", "proxy_url", metavar="URL", default=None,
              help="A proxy database: its partitions, and every shard's status in one view "
                   "(what --database-url naming a proxy shows too).")
@click.pass_obj
def status(obj: Context, as_json: bool, proxy_url: str | None) -> None:
    """Deployed version, pending migrations, cron jobs and their last runs, table sizes."""
    from .db.status import collect, render

    from .proxy.status import is_proxy_database

    if proxy_url or is_proxy_database(obj.database_url()):  # a proxy's status is its shards'
        from .proxy.cli import status_report

        click.echo(status_report(proxy_url or obj.database_url(), as_json))
        return
    report = collect(obj.database_url())
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


register_proxy_commands(main, Commands, Context)


@main.command("rotate-secret")
@click.option("--revoke-previous", is_flag=True,
              help="Also revoke every older key (after a leak): the links signed with them STOP WORKING.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation before --revoke-previous.")
@click.pass_obj
def rotate_secret(obj: Context, revoke_previous: bool, yes: bool) -> None:
    """Add a new key for signing one-click unsubscribe links.

    New links are signed with it; links already sent keep working (each names its key). With
    --revoke-previous every older key is revoked: unsubscribe links already in people's inboxes
    stop working. Connect as the login that deploys runhub: no runhub role may rotate.
    """
    import psycopg

    if revoke_previous and not yes:
        click.confirm("Revoke every older key? Unsubscribe links already sent will stop working", abort=True)
    log = logs.get("secrets")
    try:
        with psycopg.connect(obj.database_url(), autocommit=True) as conn:
            rotation = Api(conn).rotate_unsubscribe_key(revoke_previous)
    except psycopg.errors.UndefinedFunction as exc:
        raise click.ClickException("runhub.rotate_unsubscribe_key is missing: deploy runhub first") from exc
    except psycopg.Error as exc:
        log.error("unsubscribe_key_rotation_failed", error=str(exc).strip())
        raise click.ClickException(f"rotation failed, nothing changed: {str(exc).strip()}") from exc
    log.info("unsubscribe_key_rotated", key_id=rotation["keyId"], revoked_key_ids=rotation["revokedKeyIds"],
             active_key_ids=rotation["activeKeyIds"])
    click.echo(f"unsubscribe key {rotation['keyId']} signs new links; "
               f"links signed with keys {_ids(rotation['activeKeyIds'])} work")
    if rotation["revokedKeyIds"]:
        click.echo(f"revoked keys {_ids(rotation['revokedKeyIds'])}: links signed with them no longer unsubscribe")




@main.command("login-role")
@click.argument("name")
@click.option("--component", type=click.Choice(sorted(LOGIN_TIMEOUTS)), required=True,
              help="What connects as it: the application (app), the webhook receiver (ingest), "
                   "`runhub sender` (sender) or dashboards (reader).")
@click.option("--password-env", metavar="VAR", default=None,
              help="An environment variable holding its password [default: none set, e.g. certificate or peer auth].")
@click.pass_obj
def login_role(obj: Context, name: str, component: str, password_env: str | None) -> None:
    """Create or update the LOGIN role NAME for one component: granted runhub_<component> and no
    other runhub role, with that component's statement_timeout and
    idle_in_transaction_session_timeout in this database. Connect as the login that deploys runhub.
    On a proxy database, the same login is made on every shard too: PL/Proxy connects as it."""
    import psycopg

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise click.ClickException(f"${password_env} is empty or not set")
    try:
        with psycopg.connect(obj.database_url(), autocommit=True) as conn:
            apply_login_role(conn, name, component, password)
            shards = _proxy_partitions(conn)
        for connstr in shards:  # PL/Proxy connects to the shards as the calling login
            from .proxy.shards import connect

            with connect(connstr, obj.database_url(), autocommit=True) as shard:
                apply_login_role(shard, name, component, password)
    except NotAComponentLogin as exc:
        raise click.ClickException(str(exc)) from exc
    except psycopg.Error as exc:
        raise click.ClickException(f"login-role failed: {str(exc).strip()} (each database it did not "
                                   "reach is unchanged: run it again)") from exc
    statement, idle = LOGIN_TIMEOUTS[component]
    click.echo(f"{name}: LOGIN, granted runhub_{component} only, statement_timeout {statement}, "
               f"idle_in_transaction_session_timeout {idle} in this database"
               + (f" and its {len(shards)} shard(s)" if shards else ""))


def _proxy_partitions(conn) -> list[str]:
    """A proxy's partitions' connection strings; none for a shard or a single database."""
    from .proxy import queries

    if not conn.execute(queries.IS_PROXY_DATABASE).fetchone()[0]:
        return []
    return [connstr for _, connstr in conn.execute(queries.PARTITIONS).fetchall()]


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))


@main.command()
@click.pass_obj
def demo(obj: Context) -> None:
    """Load the demo shop (idempotent) and print what is in it."""
    from .demo import load

    result = load(obj.database_url())
    click.echo(f"demo shop {result['name']} ({result['project']}): {result['inserted']} new event(s)")
    for kind, count in result["events"].items():
        click.echo(f"  {kind:20} {count}")
    click.echo("actions, previewed as the owner:")
    for action in result["actions"]:
        preview = result["previews"][action["id"]]
        state = "available" if action["available"] else f"unavailable ({action['reasonText']})"
        blocked = f", blocked: {preview['blocked']['text']}" if "blocked" in preview else ""
        click.echo(f"  {action['id']:18} {state}: {preview['count']} recipient(s){blocked}")
        click.echo(f"    {preview['criteria']['text']}; excluded: "
                   + (", ".join(f"{x['count']} {x['exclusion']}" for x in preview["excluded"]) or "nothing"))
    run = result["run"]
    if run and "blocked" in run:
        click.echo(f"recovery run: not now ({run['blocked']})")
    elif run:
        again = " (today's, already created)" if run["deduplicated"] else ""
        click.echo(f"recovery run {run['id']}{again}: {run['status']}, result {json.dumps(run.get('result'))}")
        for email, link in run["links"]:
            click.echo(f"  {email:24} {link or 'held out: not mailed, to measure what the mail earns'}")
        click.echo(_outcome_line(run.get("outcome")))
    if result["digest"]:  # yesterday's digest, as its owner will get it at 08:00 shop time
        from .mail.daemon import dashboard_link
        from .mail.preview import write_digest_preview

        content = {**result["digest"], "runHubUrl": dashboard_link(sender_defaults.DASHBOARD_URL, result["project"])}
        html, text = write_digest_preview(content, content.get("locale"), obj.home / "digests")
        click.echo(f"yesterday's digest: {html} and {text}")


def _outcome_line(outcome: dict | None) -> str:
    if not outcome:
        return "outcome: none (this action earns no money outcome)"
    if not outcome["conversions"]:
        return f"outcome: no conversions yet ({outcome['windowHours']}h window; mail not sent yet, or nobody paid)"
    money = f"{outcome['revenueCents'] / 100:.2f} {outcome['currency']}"
    state = "final" if outcome["final"] else f"window open until {outcome['windowEndsAt']}"
    return (f"outcome: {outcome['conversions']} conversion(s), {money} ({outcome['matchedBy']}, "
            f"{outcome['confidence']} confidence; {state})")


@main.command("import")
@click.option("--project", required=True, type=click.UUID, metavar="UUID", help="The shop the events are for.")
@click.argument("source", type=click.File("r", encoding="utf-8", lazy=False), metavar="FILE|-")
@click.pass_obj
def import_command(obj: Context, project, source) -> None:
    """Import a shop's history: JSON lines, one event a line (the shape ingest_event takes), streamed
    through runhub.ingest_events in batches. Idempotent: re-running stores nothing twice. A refused
    line never stops the import; the summary lists refusals by reason with their line numbers.
    Connect as an ingest login (or the deploying one)."""
    import psycopg

    from .importer import import_events, summary

    log = logs.get("import")
    size = _file_size(source)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(click.progressbar(length=size, label="importing", show_eta=True, show_percent=True,
                                                    file=sys.stderr)) if size else None
        seen = [0, time.monotonic()]

        def progress(report, read: int) -> None:
            if bar is not None:
                bar.label = f"importing ({report.events_per_second:,.0f} events/s)"
                bar.update(read - seen[0])
                seen[0] = read
            elif time.monotonic() - seen[1] >= 2:  # a pipe: no length, so a log line now and then
                seen[1] = time.monotonic()
                log.info("import_progress", lines=report.lines, events_per_s=round(report.events_per_second))

        try:
            report = import_events(obj.database_url(), str(project), source, progress)
        except psycopg.Error as exc:
            raise click.ClickException(f"import stopped: {str(exc).strip()}") from exc
    for line in summary(report):
        click.echo(line)
    log.info("import_finished", lines=report.lines, stored=report.stored, already_there=report.already_there,
             refused=report.refused_count)


def _file_size(source) -> int | None:
    """The size of a regular file behind source (for the progress bar), else None (a pipe)."""
    try:
        info = os.fstat(source.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None


@main.command("attribute-payments")
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
              help="Re-examine payments that happened at or after this instant (UTC unless an offset is given).")
@click.option("--project", "projects", multiple=True, type=click.UUID, metavar="UUID",
              help="Only this project (repeatable) [default: every project].")
@click.pass_obj
def attribute_payments(obj: Context, since, projects) -> None:
    """Credit stored payments that no workflow mail was credited with yet (after a restore, or
    with the attribution trigger off). Idempotent: a second run adds nothing."""
    import psycopg
    from datetime import timezone

    from .db import queries

    since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    log = logs.get("attribution")
    with psycopg.connect(obj.database_url(), autocommit=True) as conn:
        ids = list(projects) or [r[0] for r in conn.execute(queries.ALL_PROJECT_IDS)]
        total = 0
        for n, project in enumerate(ids, 1):
            added = Api(conn).attribute_payments(project, since)
            total += added
            log.info("payments_attributed", project_id=str(project), added=added, progress=f"{n}/{len(ids)}")
    click.echo(f"{total} payment(s) newly credited in {len(ids)} project(s) since {since.isoformat()}")


# -- mail ---------------------------------------------------------------------------------------

@main.command()
@click.option("--smtp-url", envvar="RUNHUB_SMTP_URL", default=sender_defaults.SMTP_URL, show_default=True,
              help="smtp[s]://user:pass@host:port?starttls=true — the relay to send through.")
@click.option("--from", "from_addr", envvar="RUNHUB_MAIL_FROM", default=sender_defaults.FROM_ADDR,
              show_default=True, help="The platform's address all mail comes from: workflow mail under the shop's "
                   "senderName (default its name), with its replyTo; digests under this name. Message-IDs are on its domain.")
@click.option("--unsubscribe-url", envvar="RUNHUB_UNSUBSCRIBE_URL",
              default=sender_defaults.UNSUBSCRIBE_URL, show_default=True,
              help="One-click unsubscribe link; {token} is replaced by the signed token.")
@click.option("--dashboard-url", envvar="RUNHUB_DASHBOARD_URL", default=sender_defaults.DASHBOARD_URL, show_default=True,
              help="The dashboard link of a digest; {projectId} is replaced by the project's id.")
@click.option("--concurrency", default=sender_defaults.CONCURRENCY, show_default=True, type=click.IntRange(1, 64),
              help="Messages sent at once (one SMTP session each).")
@click.option("--rate", type=click.FloatRange(min=0.1), default=None, help="Messages per second, all projects.")
@click.option("--project-rate", type=click.FloatRange(min=0.1), default=None, help="Messages per second, per project.")
@click.option("--batch", default=sender_defaults.BATCH, show_default=True, type=click.IntRange(1, MAX_CLAIM_BATCH),
              help="Messages claimed ahead of the workers (the local queue, refilled when half empty).")
@click.option("--poll-seconds", default=sender_defaults.POLL_SECONDS, show_default=True, type=click.FloatRange(min=0.1),
              help="Poll this often even without a NOTIFY.")
@click.option("--wake-seconds", default=sender_defaults.WAKE_SECONDS, show_default=True, type=click.FloatRange(min=0.01),
              help="A NOTIFY wakes the sender at most this often (any login can NOTIFY: a flood costs what "
                   "polling this often costs).")
@click.option("--lease-seconds", default=sender_defaults.LEASE_SECONDS, show_default=True,
              type=click.IntRange(MIN_LEASE_SECONDS, MAX_MESSAGE_LEASE_SECONDS),
              help="How long a claimed message stays ours without a heartbeat (a crashed sender's come back after it).")
@click.option("--listen-url", envvar="RUNHUB_LISTEN_URL", default=None,
              help="Where to LISTEN for wake-ups [default: the database URL]. Behind a pooler in transaction "
                   "mode (PgBouncer), a direct connection to PostgreSQL; or 'none' to poll every --poll-seconds.")
@click.option("--until-idle", is_flag=True,
              help="Execute and deliver what is due, then exit 0 once nothing is (no run queued or executing, "
                   "no message due or being sent): for scripts and one-off catch-ups.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on this port (/metrics): the sender's own and the database's.")
@click.option("--metrics-host", default=sender_defaults.METRICS_HOST, show_default=True,
              help="The address the metrics are served on (0.0.0.0: every interface).")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Sender processes. One is bound by one core (rendering and SMTP in Python): for bulk mail, as "
                   "many as the host has cores. Each has --concurrency SMTP sessions and 3 database sessions; "
                   "--rate and --project-rate are shared among them; the first alone executes runs and catches up "
                   "on digests; --metrics-port serves them all, each sender's figures labelled process=\"i\". "
                   "A process that dies is restarted; SIGTERM stops them all cleanly.")
@click.pass_obj
def sender(obj: Context, smtp_url, from_addr, unsubscribe_url, dashboard_url, concurrency, rate, project_rate,
           batch, poll_seconds, wake_seconds, lease_seconds, listen_url, until_idle, metrics_port, metrics_host,
           processes) -> None:
    """Run the sender daemon: execute runs and deliver the outbox (SIGTERM stops it cleanly)."""
    from .mail.daemon import Sender, SenderConfig
    from .mail.smtp import SmtpConfig

    config = SenderConfig(database_url=obj.database_url(), smtp=SmtpConfig.from_url(smtp_url),
                          from_addr=from_addr, unsubscribe_url=unsubscribe_url, dashboard_url=dashboard_url,
                          concurrency=concurrency, rate=rate, project_rate=project_rate, batch=batch,
                          poll_seconds=poll_seconds, wake_seconds=wake_seconds, lease_seconds=lease_seconds,
                          listen_url="" if (listen_url or "").lower() == "none" else listen_url,
                          exit_when_idle=until_idle, metrics_port=metrics_port, metrics_host=metrics_host)
    if processes > 1:
        from .mail.processes import Supervisor

        daemon = Supervisor(config, processes, obj.log_format)
    else:
        daemon = Sender(config)
    daemon.install_signal_handlers()
    sys.exit(daemon.run())


@main.command("metrics")
@click.pass_obj
def metrics_command(obj: Context) -> None:
    """Print the database's metrics once, in Prometheus' text format (runhub.metrics(): queues, runs,
    relays, the digest job, cancelled mail), e.g. for a node exporter's textfile collector. The
    sender's own come from `runhub sender --metrics-port`."""
    from .metrics import database_text

    text = database_text(obj.database_url())
    if b"runhub_database_up 1.0" not in text:
        raise click.ClickException("could not read runhub.metrics(): is runhub deployed in this database?")
    click.echo(text.decode(), nl=False)


@main.command("smtp-sink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, show_default=True, type=int)
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to store the .eml files [default: <home>/mail].")
@click.pass_obj
def smtp_sink(obj: Context, host: str, port: int, folder: Path | None) -> None:
    """A local SMTP server that accepts everything and stores each mail as an .eml file."""
    import signal
    import threading

    from .mail.sink import serve_sink

    folder = folder or obj.home / "mail"
    controller = serve_sink(folder, host, port)
    click.echo(f"smtp-sink on {host}:{port}, storing mail in {folder}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


# -- render ---------------------------------------------------------------------------------------

@main.command("render")
@click.argument("template", type=click.Choice(TEMPLATES))
@click.option("--locale", default="en", show_default=True,
              help=f"Language tag: {LOCALE_LIST}; others fall back to their language, then {DEFAULT_LOCALE}.")
@click.option("--var", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A variable (repeatable); wins over --vars-json and --sample.")
@click.option("--vars-json", type=click.File("r", encoding="utf-8"), default=None, metavar="FILE",
              help="A JSON object of variables ('-' for stdin); the digest's nested ones go here.")
@click.option("--sample", is_flag=True, help="Start from built-in example variables for TEMPLATE.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder for the .eml and .html files.")
def render_command(template: str, locale: str, pairs: tuple[str, ...], vars_json, sample: bool,
                   out_dir: Path) -> None:
    """Render TEMPLATE to an .eml and an .html file for a person to look at (no database needed).

    Workflow mail takes projectName, customerName, link, cartId, amountCents, currency, subject,
    content and shopUrl; the digest takes a DigestContent as runhub.generate_digest makes it
    (projectName, date, currency, kpiOrder, kpis, and headline, anomaly and recommendedAction as
    i18n keys with params, lastOutcome) plus runHubUrl, as JSON (docs/sql-contract.md, "Digests").
    """
    from .mail.preview import SAMPLES, write_preview
    from .mail.values import RenderError

    variables = dict(SAMPLES[template]) if sample else {}
    if vars_json is not None:
        try:
            loaded = json.load(vars_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--vars-json") from exc
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--vars-json")
        variables.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--var")
        variables[key] = value
    try:
        paths = write_preview(template, locale, variables, out_dir)
    except RenderError as exc:
        hint = "" if sample else " (give it with --var KEY=VALUE or --vars-json, or start from example values: --sample)"
        raise click.ClickException(f"{exc}{hint}") from exc
    except OSError as exc:  # e.g. a symlink where a preview goes
        raise click.ClickException(str(exc)) from exc
    for path in paths:
        click.echo(path)


# -- digest -------------------------------------------------------------------------------------

@main.group(cls=Commands)
def digest() -> None:
    """Daily digests: look at one before it is sent."""


@digest.command("preview")
@click.option("--project", required=True, type=click.UUID, metavar="UUID", help="The project.")
@click.option("--day", default="yesterday", show_default=True, metavar="yesterday|today|YYYY-MM-DD",
              help="The project's local calendar day the digest covers; yesterday and today are the project's, "
                   "in its time zone (today so far).")
@click.option("--locale", default=None,
              help=f"Language tag: {LOCALE_LIST} [default: the project's, as the digest says].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder for the .html and .txt files.")
@click.option("--dashboard-url", envvar="RUNHUB_DASHBOARD_URL", default=sender_defaults.DASHBOARD_URL, show_default=True,
              help="The dashboard link in the digest; {projectId} is replaced by the project's id.")
@click.pass_obj
def digest_preview(obj: Context, project, day, locale: str | None, out_dir: Path, dashboard_url: str) -> None:
    """Compute a project's digest of DAY (runhub.generate_digest) and render it, as the sender
    would, to digest.<project>.<day>.<locale>.html and .txt (private files). Sends nothing.

    A day without activity has no digest: that is said, and the exit status is 0.
    """
    import psycopg

    from .mail.daemon import dashboard_link
    from .mail.preview import write_digest_preview
    from .mail.values import RenderError

    try:
        with psycopg.connect(obj.database_url(), autocommit=True) as conn:
            day = _digest_day(conn, project, day)
            content = Api(conn).generate_digest(project, day)
    except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName) as exc:
        message = exc.diag.message_primary or ""
        if "generate_digest(" in message or 'schema "runhub"' in message:  # not a function it calls
            raise click.ClickException("runhub.generate_digest is missing: deploy this runhub first") from exc
        raise click.ClickException(f"generate_digest failed: {str(exc).strip()}") from exc
    except psycopg.Error as exc:
        raise click.ClickException(f"generate_digest failed: {str(exc).strip()}") from exc
    if content is None:
        click.echo(f"no digest: project {project} had no activity on {day.isoformat()}")
        return
    locale = locale or content.get("locale") or "en"
    content = {**content, "runHubUrl": dashboard_link(dashboard_url, content.get("projectId") or project)}
    try:
        paths = write_digest_preview(content, locale, out_dir)
    except (RenderError, OSError) as exc:  # OSError: e.g. a symlink where a preview goes
        raise click.ClickException(str(exc)) from exc
    for path in paths:
        click.echo(path)


def _digest_day(conn, project, day: str):
    """The date --day names: yesterday or today on the project's clock (runhub's, in its zone), or
    the date given."""
    import datetime as dt

    if day not in ("yesterday", "today"):
        try:
            return dt.date.fromisoformat(day)
        except ValueError:
            raise click.BadParameter(f"{day!r} is not yesterday, today or YYYY-MM-DD", param_hint="--day") from None
    from .db import queries

    today = conn.execute(queries.PROJECT_TODAY, (project,)).fetchone()
    if today is None:
        raise click.ClickException(f"no project {project} in this database")
    return today[0] - dt.timedelta(days=1 if day == "yesterday" else 0)


@main.command()
@click.option("--smtp-port", default=2525, show_default=True, type=int, help="Port of the local sink.")
@click.option("--until-idle", is_flag=True, help="Exit once nothing is due, instead of running until SIGTERM.")
@click.pass_obj
def up(obj: Context, smtp_port: int, until_idle: bool) -> None:
    """Start the embedded database, deploy, and run the SMTP sink and the sender together.

    Mail goes to the local sink, stored as .eml files under <home>/mail.
    """
    from .db.deploy import deploy as run_deploy
    from .mail.daemon import Sender, SenderConfig
    from .mail.sink import serve_sink
    from .mail.smtp import SmtpConfig

    url = obj.database_url_option
    if not url:
        obj.cluster.start()
        url = obj.cluster.url()
    run_deploy(url)
    folder = obj.home / "mail"
    smtp_port = _port_or_free(smtp_port)
    sink = serve_sink(folder, "127.0.0.1", smtp_port)
    click.echo(f"smtp-sink on 127.0.0.1:{smtp_port}, storing mail in {folder}")
    before = set(folder.glob("*.eml"))
    try:
        daemon = Sender(SenderConfig(database_url=url, smtp=SmtpConfig("127.0.0.1", smtp_port),
                                     poll_seconds=1.0 if until_idle else 5.0, exit_when_idle=until_idle))
        daemon.install_signal_handlers()
        daemon.run()
    finally:
        sink.stop()
    new = sorted(set(folder.glob("*.eml")) - before)
    click.echo(f"{len(new)} mail(s) delivered to the sink this time" + (f", e.g. {new[0]}" if new else ""))


def _port_or_free(port: int) -> int:
    """port if it is free on loopback, else any free one (so `up` works beside another sink)."""
    import socket

    from .db.embedded import free_port

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()
