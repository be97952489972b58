"""The `runhub` command."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__, logs
from .embedded import Cluster, EmbeddedError, default_home

ENV_HELP = "Defaults to $DATABASE_URL, else the embedded cluster in --home (started with `runhub db start`)."


class Context:
    def __init__(self, home: Path, database_url: str | None):
        self.home = home
        self._database_url = database_url

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.home)

    def database_url(self) -> str:
        if self._database_url:
            return self._database_url
        cluster = self.cluster
        if not cluster.running():
            raise click.ClickException(
                f"no database: set DATABASE_URL or --database-url, or start the embedded one "
                f"with `runhub db start` (home {self.home})")
        return cluster.url()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    ctx.obj = Context(home.resolve() if home else default_home(), database_url)


# -- runhub db ----------------------------------------------------------------------------------

@main.group()
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

    Deploying the same code twice changes nothing; a failed deploy changes nothing.
    """
    from .deploy import DEFAULT_SOURCE, DeployError, deploy as run_deploy

    try:
        result = run_deploy(obj.database_url(), source or DEFAULT_SOURCE, schedule_cron=not no_cron)
    except DeployError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.changed:
        applied = ", ".join(result.applied_migrations) or "none"
        click.echo(f"deployed runhub {result.version} (code {result.checksum[:12]}); migrations applied: {applied}")
    else:
        click.echo(f"up to date: runhub {result.version} (code {result.checksum[:12]})")
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
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Deployed version, pending migrations, cron jobs and their last runs, table sizes."""
    from .status import collect, render

    report = collect(obj.database_url())
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


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
        state = "available" if action["available"] else f"unavailable ({action['reason']})"
        blocked = f", blocked: {preview['blocked']['reason']}" if "blocked" in preview else ""
        click.echo(f"  {action['id']:18} {state}: {preview['count']} recipient(s){blocked}")
        click.echo(f"    {preview['criteria']}; excluded: "
                   + (", ".join(f"{x['count']} {x['exclusion']}" for x in preview["excluded"]) or "nothing"))
    run = result["run"]
    if run and "blocked" in run:
        click.echo(f"recovery run: not now ({run['blocked']})")
    elif run:
        again = " (today's, already created)" if run["deduplicated"] else ""
        click.echo(f"recovery run {run['id']}{again}: {run['status']}, result {json.dumps(run.get('result'))}")
        for email, link in run["links"]:
            click.echo(f"  {email:24} {link}")

