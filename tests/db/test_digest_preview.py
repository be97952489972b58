"""The daily digest from a real database: `runhub digest preview` writes a project's day in its
language, and the digest job's queued DigestContent reaches an SMTP server rendered in the project's
language with its dashboard link. (The renderer alone: tests/unit/test_digest_render.py.)"""
from __future__ import annotations

import email
import email.policy
import uuid
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner

from helpers.db import ingest, new_project
from helpers.digest import english_in, format_percent_of, plain
from helpers.files import file_mode
from runhub_loader import cli
from runhub_loader.constants import ACTION_IDS, LOCALES
from runhub_loader.mail import daemon as sender_module
from runhub_loader.mail.locales import catalog, format_money
from runhub_loader.mail.render import Rendered
from runhub_loader.mail.smtp import SmtpConfig


# -- `runhub digest preview` against a real database -----------------------------------------------

DAY = "2026-11-20"  # a Friday


def event(conn, project, kind, at, **extra):
    ingest(conn, project, {"type": kind, "occurredAt": at, "idempotencyKey": uuid.uuid4().hex, **extra})


def busy_project(conn, locale="fr"):
    """A shop in Paris with a day of activity (DAY) and the day before, to compare with."""
    project, owner = new_project(conn, timezone="Europe/Paris", currency="EUR", locale=locale)
    for at, kind, extra in [
        ("2026-11-19T09:00:00+01:00", "checkout_started", {}),
        ("2026-11-19T09:30:00+01:00", "payment_succeeded", {"amountCents": 120000, "currency": "EUR"}),
        ("2026-11-19T10:00:00+01:00", "lead_created", {}),
        ("2026-11-20T09:00:00+01:00", "checkout_started", {}),
        ("2026-11-20T09:05:00+01:00", "checkout_started", {}),
        ("2026-11-20T09:30:00+01:00", "payment_succeeded", {"amountCents": 150000, "currency": "EUR"}),
        ("2026-11-20T11:00:00+01:00", "payment_succeeded", {"amountCents": 2000, "currency": "USD"}),
        ("2026-11-20T23:30:00+01:00", "lead_created", {}),  # local DAY (22:30 UTC)
        ("2026-11-21T00:15:00+01:00", "lead_created", {}),  # the next local day (23:15Z on the 20th in UTC)
    ]:
        event(conn, project, kind, at, **extra)
    return project


def preview(db_url, *args):
    return CliRunner().invoke(cli.main, ["--database-url", db_url, "digest", "preview", *args])


def test_digest_preview_writes_the_days_digest_in_the_projects_language(conn, db_url, tmp_path, umask_022):
    project = busy_project(conn, locale="fr")
    out = tmp_path / "previews"
    result = preview(db_url, "--project", str(project), "--day", DAY, "--out", str(out))
    assert result.exit_code == 0, result.output
    html_path, text_path = out / f"digest.{project}.{DAY}.fr.html", out / f"digest.{project}.{DAY}.fr.txt"
    assert result.output.split() == [str(html_path), str(text_path)]
    assert file_mode(out) == 0o700 and [file_mode(p) for p in (html_path, text_path)] == [0o600, 0o600]
    page, text = html_path.read_text(encoding="utf-8"), text_path.read_text(encoding="utf-8")
    assert '<html dir="ltr" lang="fr">' in page
    assert text.startswith("Shop\u00a0: votre résumé quotidien du 20 novembre 2026\n\n")
    assert "vendredi 20 novembre 2026" in text
    assert format_money(150000, "EUR", "fr") in text and plain(format_money(150000, "EUR", "fr")) == "1 500,00 €"
    assert catalog("fr")["digest.headline.revenueUp"].format(percent=format_percent_of(25, "fr")) in text
    assert catalog("fr")["digest.kpi.otherCurrency.one"].format(count=1) in text  # the USD payment
    assert f'href="https://localhost/projects/{project}/run"' in page
    rendered = Rendered(text.split("\n", 1)[0], text, page, "fr")
    assert english_in(rendered, "fr", owned=("Shop",)) == set()


def test_digest_preview_in_another_language_and_with_a_dashboard_link(conn, db_url, tmp_path):
    project = busy_project(conn, locale="fr")
    result = preview(db_url, "--project", str(project), "--day", DAY, "--locale", "ar", "--out", str(tmp_path),
                     "--dashboard-url", "https://app.example/{projectId}")
    assert result.exit_code == 0, result.output
    page = (tmp_path / f"digest.{project}.{DAY}.ar.html").read_text(encoding="utf-8")
    assert '<html dir="rtl" lang="ar">' in page and f'href="https://app.example/{project}"' in page
    assert format_money(150000, "EUR", "ar") in page


def test_digest_preview_with_a_proof_point_and_a_recommendation(conn, db_url, tmp_path):
    """A recovery run that earned a payment, and two new abandoned checkouts: the digest of today
    recommends recovering them and shows what the last recovery brought in."""
    from helpers.attribution import pay, recovery_run

    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)}, hours_ago=30)
    pay(conn, project, "ann@shop.example", cart="cart-1", hours_ago=29)
    conn.execute("UPDATE runhub.workflow_runs SET requested_at = now() - interval '31 hours' WHERE id = %s", (run,))
    for email_ in ("bo@shop.example", "cy@shop.example"):
        event(conn, project, "checkout_started", datetime.now(timezone.utc).isoformat(), customer={"email": email_},
              amountCents=500, currency="EUR", correlationId=f"c-{email_}")
    today = conn.execute("SELECT (now() AT TIME ZONE 'Europe/Paris')::date").fetchone()[0].isoformat()
    result = preview(db_url, "--project", str(project), "--day", today, "--locale", "de", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    text = (tmp_path / f"digest.{project}.{today}.de.txt").read_text(encoding="utf-8")
    t = catalog("de")
    assert f'{t["digest.action.prefix"]} {t["digest.actionLabel.recover_abandoned"]}' in text
    assert t["digest.recommend.recoverAbandoned.other"].format(count=2) in text
    assert t["digest.proof.recovered"].format(action=t["digest.actionLabel.recover_abandoned"],
                                              amount=format_money(4200, "EUR", "de")) in text


def test_digest_preview_of_a_quiet_day_writes_nothing(conn, db_url, tmp_path):
    project = busy_project(conn)
    result = preview(db_url, "--project", str(project), "--day", "2026-11-10", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "no activity" in result.output and list(tmp_path.iterdir()) == []


def test_digest_preview_of_an_unknown_project_fails(db_url, tmp_path):
    result = preview(db_url, "--project", str(uuid.uuid4()), "--day", DAY, "--out", str(tmp_path))
    assert result.exit_code == 1 and "generate_digest failed" in result.output
    bad_day = preview(db_url, "--project", str(uuid.uuid4()), "--day", "20.11.2026", "--out", str(tmp_path))
    assert bad_day.exit_code == 2


def test_digest_preview_on_a_database_without_runhub_says_to_deploy(fresh_db, tmp_path):
    result = preview(fresh_db, "--project", str(uuid.uuid4()), "--day", DAY, "--out", str(tmp_path))
    assert result.exit_code == 1 and "deploy this runhub first" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_queued_digest_is_delivered_in_the_projects_language_with_its_dashboard_link(conn, db_url, tmp_path):
    """The whole path: the digest job queues yesterday's DigestContent, the sender renders it in
    the project's language (Arabic here) with the dashboard link of --dashboard-url, and the mail
    reaches an SMTP server with no English in it."""
    from psycopg.types.json import Jsonb

    from runhub_loader.db.embedded import free_port
    from runhub_loader.mail.sink import serve_sink

    project, owner = new_project(conn, timezone="UTC", locale="ar")
    conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(
        {"dailyDigestEnabled": True, "dailyDigestHour": 9, "dailyDigestRecipient": "owner@shop.example"})))
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    event(conn, project, "lead_created", yesterday.isoformat())
    event(conn, project, "payment_succeeded", yesterday.isoformat(), amountCents=4200, currency="EUR")
    conn.execute("UPDATE runhub.projects SET digest_next_at = now() - interval '1 minute' WHERE id = %s", (project,))
    assert conn.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0] == 1

    port = free_port()
    sink = serve_sink(tmp_path / "mail", "127.0.0.1", port)
    try:
        config = sender_module.SenderConfig(database_url=db_url, smtp=SmtpConfig("127.0.0.1", port), concurrency=1,
                                            poll_seconds=0.2, exit_when_idle=True,
                                            dashboard_url="https://app.example/projects/{projectId}/run")
        assert sender_module.Sender(config).run() == 0
    finally:
        sink.stop()
    status = conn.execute("SELECT status FROM runhub.outbox WHERE project_id = %s AND template = 'digest'",
                          (project,)).fetchall()
    assert status == [("sent",)]
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    page, text = (parsed.get_body((kind,)).get_content() for kind in ("html", "plain"))
    assert parsed["To"] == "owner@shop.example" and parsed["Content-Language"] == "ar"
    assert '<html dir="rtl" lang="ar">' in page
    assert f'href="https://app.example/projects/{project}/run"' in page
    assert format_money(4200, "EUR", "ar") in text
    rendered = Rendered(str(parsed["Subject"]), text, page, "ar")
    assert english_in(rendered, "ar", owned=("Shop",)) == set()


def test_every_registry_action_has_a_label_in_every_language(conn):
    registered = {row[0] for row in conn.execute("SELECT id FROM runhub.actions WHERE type = 'workflow'")}
    assert registered == set(ACTION_IDS)
    for locale in LOCALES:
        assert all(catalog(locale)[f"digest.actionLabel.{action_id}"].strip() for action_id in registered)


def test_digest_preview_takes_yesterday_and_today_on_the_projects_clock(conn, db_url, tmp_path):
    """--day is yesterday by default, in the project's time zone (Kiritimati is 14 hours ahead of
    UTC: its yesterday is often UTC's today); today is the day so far; anything else is refused."""
    project, _ = new_project(conn, timezone="Pacific/Kiritimati", currency="EUR", locale="en")
    local_today = conn.execute("SELECT (runhub._now() AT TIME ZONE 'Pacific/Kiritimati')::date").fetchone()[0]
    for args, day in [((), local_today - timedelta(days=1)), (("--day", "yesterday"), local_today - timedelta(days=1)),
                      (("--day", "today"), local_today)]:
        event(conn, project, "lead_created", f"{day.isoformat()}T00:30:00+14:00")
        result = preview(db_url, "--project", str(project), "--out", str(tmp_path), *args)
        assert result.exit_code == 0, result.output
        text = (tmp_path / f"digest.{project}.{day.isoformat()}.en.txt").read_text()
        assert ("today so far" in text) == (args == ("--day", "today")), (args, text)
        assert ("yesterday" in text) == (args != ("--day", "today")), (args, text)
    bad = preview(db_url, "--project", str(project), "--day", "tomorrow")
    assert bad.exit_code == 2 and "yesterday, today or YYYY-MM-DD" in bad.output
    unknown = preview(db_url, "--project", str(uuid.uuid4()), "--day", "today")
    assert unknown.exit_code == 1 and "no project" in unknown.output
