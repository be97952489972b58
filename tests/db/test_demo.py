"""The demo shop behind the README's main job: loads, previews, runs a recovery, and re-runs cleanly."""
from __future__ import annotations

import psycopg

from helpers.attribution import deliver
from runhub_loader.demo import load


def test_the_demo_runs_the_loop_and_is_idempotent(db_url):
    first = load(db_url)
    assert first["inserted"] > 100 and set(first["events"]) >= {"checkout_started", "payment_succeeded"}
    assert {a["id"] for a in first["actions"]} == {"recover_abandoned", "send_promo", "onboard_users"}
    run, preview = first["run"], first["previews"]["recover_abandoned"]
    if "blocked" in preview:  # the last 24 hours of demo data may hold no abandoned checkout
        assert run == {"blocked": preview["blocked"]["reason"]}
    else:
        assert run["status"] == "running" and run["result"]["totalRecipients"] == len(run["links"]) == preview["count"]
        assert all(f"/checkout?wid={run['id']}&cart=" in link for _, link in run["links"])

    again = load(db_url)
    assert again["inserted"] == 0 and again["events"] == first["events"]
    assert again["project"] == first["project"]


def test_the_demo_closes_the_loop_once_its_mail_went_out(db_url):
    first = load(db_url)
    run = first["run"]
    if "id" not in run:  # blocked today: nothing was sent, nothing to earn
        return
    assert run["outcome"]["conversions"] == 0 and run["outcome"]["final"] is False
    with psycopg.connect(db_url, autocommit=True) as conn:
        deliver(conn, run["id"])
    after = load(db_url)["run"]["outcome"]
    assert (after["conversions"], after["matchedBy"], after["confidence"]) == (1, "wid_link", "high")
    assert load(db_url)["run"]["outcome"] == after, "the payment comes once"


def test_the_demo_shop_gets_digests_and_the_demo_writes_yesterdays(db_url, tmp_path):
    from click.testing import CliRunner

    from runhub_loader.cli import main as cli

    result = CliRunner().invoke(cli, ["--database-url", db_url, "--home", str(tmp_path), "--log-format", "text", "demo"])
    assert result.exit_code == 0, result.output
    line = [l for l in result.output.splitlines() if l.startswith("yesterday's digest: ")]
    assert line, result.output
    html = line[0].removeprefix("yesterday's digest: ").split(" and ")[0]
    assert html.startswith(str(tmp_path / "digests")) and "Demo Coffee Roasters" in open(html, encoding="utf-8").read()
    with psycopg.connect(db_url) as conn:
        enabled, next_at = conn.execute("SELECT digest_enabled, digest_next_at FROM runhub.projects").fetchone()
    assert enabled and next_at is not None
