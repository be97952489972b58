"""Unsubscribe keys on a real deployed database: rotation end to end through `runhub rotate-secret`,
revocation, v1 links surviving the upgrade that introduced key ids, and `runhub.unsubscribe`
refusing every altered token with PT400 and nothing else."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.db import assert_refused, new_project
from helpers.files import older_checkout
from helpers.tokens import legacy_v1_token, single_edits
from helpers.workflows import create_run, preview, process_runs, ready_shop, signup
from runhub_loader.cli import main as cli
from runhub_loader.db.deploy import deploy

RUNHUB = Path(sys.executable).with_name("runhub")
# A checkout whose tokens had no key id (v1, before migration 0006): the one a database upgrades from.
V1_COMMIT = "c0194f22c08533b41e15db14facd058b0f250a8f"


def token(conn, project, email) -> str:
    return conn.execute("SELECT runhub.unsubscribe_token(%s, %s)", (project, email)).fetchone()[0]


def key_id(tok: str) -> int:
    return int(tok.split(".")[1])


def unsubscribe(conn, tok: str) -> None:
    conn.execute("SELECT runhub.unsubscribe(%s)", (tok,))


def assert_invalid(conn, tok: str) -> None:
    with pytest.raises(psycopg.Error) as excinfo:
        unsubscribe(conn, tok)
    assert assert_refused(excinfo, "PT400", "mail.invalidUnsubscribeToken") == {}


def suppressed(conn, project) -> list[str]:
    return [r[0] for r in conn.execute("SELECT email FROM runhub.suppressions WHERE project_id = %s AND reason = 'unsubscribed'"
                                       " ORDER BY email", (project,))]


def rotate_secret(db_url, *args, stdin: str = "") -> subprocess.CompletedProcess:
    """The installed command, as an operator runs it."""
    return subprocess.run([str(RUNHUB), "--database-url", db_url, "rotate-secret", *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def log_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_rotation_end_to_end_through_the_command(conn, db_url):
    project, _ = new_project(conn)
    before = token(conn, project, "ann@example.com")
    first = key_id(before)

    rotated = rotate_secret(db_url)
    assert rotated.returncode == 0, rotated.stderr
    assert f"unsubscribe key {first + 1} signs new links" in rotated.stdout
    [logged] = [line for line in log_lines(rotated.stderr) if line["event"] == "unsubscribe_key_rotated"]
    assert (logged["key_id"], logged["revoked_key_ids"]) == (first + 1, [])

    after = token(conn, project, "bob@example.com")
    assert key_id(after) == first + 1, "new tokens name the new key"
    unsubscribe(conn, before)  # a link already in an inbox keeps working
    unsubscribe(conn, after)
    assert suppressed(conn, project) == ["ann@example.com", "bob@example.com"]

    revoked = rotate_secret(db_url, "--revoke-previous", "--yes")
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked keys {', '.join(map(str, range(1, first + 2)))}" in revoked.stdout
    newest = token(conn, project, "cat@example.com")
    assert key_id(newest) == first + 2
    assert_invalid(conn, before)
    assert_invalid(conn, after)
    unsubscribe(conn, newest)
    assert suppressed(conn, project) == ["ann@example.com", "bob@example.com", "cat@example.com"]
    assert conn.execute("SELECT array_agg(kid ORDER BY kid) FROM runhub.unsubscribe_keys WHERE revoked_at IS NULL"
                        ).fetchone()[0] == [first + 2]


def test_revoking_asks_first_and_a_refusal_changes_nothing(conn, db_url):
    keys_before = conn.execute("SELECT count(*) FROM runhub.unsubscribe_keys").fetchone()[0]
    refused = rotate_secret(db_url, "--revoke-previous", stdin="n\n")
    assert refused.returncode != 0 and "will stop working" in refused.stdout + refused.stderr
    assert conn.execute("SELECT count(*) FROM runhub.unsubscribe_keys").fetchone()[0] == keys_before


@pytest.mark.parametrize("role", ["runhub_app", "runhub_sender", "runhub_reader", "runhub_ingest"])
def test_no_runhub_role_may_rotate(conn, login_as, role):
    result = CliRunner().invoke(cli, ["--database-url", login_as(role), "rotate-secret"])
    assert result.exit_code == 1 and "permission denied" in result.output, result.output
    assert conn.execute("SELECT count(*) FROM runhub.unsubscribe_keys").fetchone()[0] == 1


def test_a_claim_after_rotation_hands_out_links_under_the_new_key(conn, db_url):
    project, owner = ready_shop(conn)
    signup(conn, project, "dan@example.com")
    assert preview(conn, project, owner, "onboard_users")["count"] == 1
    create_run(conn, project, owner, "onboard_users", "k")
    process_runs(conn)
    new_key = conn.execute("SELECT runhub.rotate_unsubscribe_key()").fetchone()[0]["keyId"]
    [claimed] = [r[0] for r in conn.execute("SELECT m FROM runhub.claim_messages('w', 10) m")]
    assert key_id(claimed["unsubscribeToken"]) == new_key
    unsubscribe(conn, claimed["unsubscribeToken"])
    assert suppressed(conn, project) == ["dan@example.com"]


def test_a_v1_token_verifies_with_key_1_until_it_is_revoked(conn):
    project, _ = new_project(conn)
    key_1 = conn.execute("SELECT secret FROM runhub.unsubscribe_keys WHERE kid = 1").fetchone()[0]
    v1 = legacy_v1_token(key_1, str(project), "ann@example.com")
    conn.execute("SELECT runhub.rotate_unsubscribe_key()")
    unsubscribe(conn, v1)
    assert suppressed(conn, project) == ["ann@example.com"]
    assert_invalid(conn, legacy_v1_token(b"x" * 32, str(project), "ann@example.com"))
    conn.execute("SELECT runhub.rotate_unsubscribe_key(true)")
    assert_invalid(conn, v1)


def test_links_sent_before_the_upgrade_keep_working(fresh_db, tmp_path):
    """A database deployed from a checkout with v1 tokens, upgraded: its v1 links (minted by
    the old code itself) still unsubscribe, verified with the old secret, now key 1."""
    old = older_checkout(tmp_path, V1_COMMIT, "old")
    deploy(fresh_db, old, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        project, _ = new_project(conn)
        sent = [token(conn, project, email) for email in ("ann@example.com", "bob@example.com")]
        old_secret = conn.execute("SELECT value FROM runhub.secrets WHERE name = 'unsubscribe'").fetchone()[0]
    assert all(t.startswith("v1.") for t in sent)

    assert "0007_unsubscribe_keys" in deploy(fresh_db, schedule_cron=False).applied_migrations
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert conn.execute("SELECT kid, secret, revoked_at FROM runhub.unsubscribe_keys").fetchall() == [(1, old_secret, None)]
        assert conn.execute("SELECT count(*) FROM runhub.secrets WHERE name = 'unsubscribe'").fetchone()[0] == 0, \
            "the secret moved: no second copy outlives a revocation"
        unsubscribe(conn, sent[0])
        conn.execute("SELECT runhub.rotate_unsubscribe_key()")
        unsubscribe(conn, sent[1])
        assert suppressed(conn, project) == ["ann@example.com", "bob@example.com"]
        conn.execute("SELECT runhub.rotate_unsubscribe_key(true)")
        assert_invalid(conn, sent[0])


@pytest.fixture
def eve(conn):
    """A project, and a valid token for eve in it (shared by every example of a hypothesis test)."""
    project, _ = new_project(conn)
    return project, token(conn, project, "eve@example.com")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_unsubscribe_refuses_every_altered_token_with_pt400_only(conn, eve, data):
    project, valid = eve
    edits = list(single_edits(valid, "A_-.=!é \n"))
    bad = data.draw(st.one_of(st.sampled_from(edits), st.text().filter(lambda t: "\x00" not in t)), label="token")
    assert_invalid(conn, bad)
    assert suppressed(conn, project) == []
