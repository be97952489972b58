"""The trust boundary, tried as an attacker would: every call goes through a LOGIN role granted only
the runhub role a deployment gives that component (runhub_app, runhub_ingest, runhub_sender), on a
database with two projects A and B. Each test is one of the attacks that once succeeded; it passes
because the attack now fails."""
from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb

from helpers.db import assert_refused, event, new_project, wait_until
from helpers.workflows import ago, create_run, clock_minute, preview, process_runs, ready_shop, run_status, signup
from runhub_loader import logs
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.daemon import Sender, SenderConfig
from runhub_loader.mail.smtp import SmtpConfig
from test_sender_e2e import ScriptedSink, onboarding_run


def add_member(conn, project, actor, role) -> uuid.UUID:
    user = uuid.uuid4()
    conn.execute("SELECT runhub.add_member(%s, %s, %s, %s)", (project, actor, user, role))
    return user


@pytest.fixture
def shops(conn):
    """Projects A and B, each with its owner, and an admin and a member in A."""
    a, a_owner = new_project(conn)
    b, b_owner = new_project(conn)
    return {"a": a, "a_owner": a_owner, "b": b, "b_owner": b_owner,
            "a_admin": add_member(conn, a, a_owner, "admin"), "a_member": add_member(conn, a, a_owner, "member")}


@pytest.fixture
def app(login_as):
    with psycopg.connect(login_as("runhub_app"), autocommit=True) as c:
        yield c


@pytest.fixture
def webhook(login_as):
    with psycopg.connect(login_as("runhub_ingest"), autocommit=True) as c:
        yield c


def members(conn, project) -> dict:
    return dict(conn.execute("SELECT user_id, role FROM runhub.project_members WHERE project_id = %s",
                             (project,)).fetchall())


def refused(conn, sql, params, sqlstate, key) -> dict:
    with pytest.raises(psycopg.Error) as excinfo:
        conn.execute(sql, params)
    return assert_refused(excinfo, sqlstate, key)


# -- who may manage members -----------------------------------------------------------------------

def test_a_stranger_cannot_make_himself_owner_of_another_project_nor_demote_its_owner(conn, app, shops):
    before = members(conn, shops["b"])
    stranger = shops["a_owner"]
    refused(app, "SELECT runhub.add_member(%s, %s, %s, 'owner')", (shops["b"], stranger, stranger),
            "PT404", "projects.notFound")
    refused(app, "SELECT runhub.add_member(%s, %s, %s, 'member')", (shops["b"], stranger, shops["b_owner"]),
            "PT404", "projects.notFound")
    assert members(conn, shops["b"]) == before


def test_a_member_cannot_promote_itself_nor_anyone(conn, app, shops):
    before = members(conn, shops["a"])
    member = shops["a_member"]
    for role in ("owner", "admin", "member"):
        detail = refused(app, "SELECT runhub.add_member(%s, %s, %s, %s)", (shops["a"], member, member, role),
                         "PT403", "auth.roleRequired")
        assert detail == {"required": "admin", "role": "member"}
    assert members(conn, shops["a"]) == before


def test_an_admin_manages_members_and_admins_but_never_an_owner(conn, app, shops):
    a, admin, owner = shops["a"], shops["a_admin"], shops["a_owner"]
    newcomer = uuid.uuid4()
    app.execute("SELECT runhub.add_member(%s, %s, %s, 'member')", (a, admin, newcomer))
    app.execute("SELECT runhub.add_member(%s, %s, %s, 'admin')", (a, admin, newcomer))
    before = members(conn, a)
    for user, role in ((admin, "owner"), (newcomer, "owner"), (owner, "admin"), (owner, "member")):
        detail = refused(app, "SELECT runhub.add_member(%s, %s, %s, %s)", (a, admin, user, role),
                         "PT403", "auth.roleRequired")
        assert detail == {"required": "owner", "role": "admin"}
    assert members(conn, a) == before == {**before, newcomer: "admin"}


def test_owners_manage_owners_and_the_last_owner_stays(conn, app, shops):
    a, owner, admin = shops["a"], shops["a_owner"], shops["a_admin"]
    refused(app, "SELECT runhub.add_member(%s, %s, %s, 'admin')", (a, owner, owner), "PT409", "projects.lastOwner")
    app.execute("SELECT runhub.add_member(%s, %s, %s, 'owner')", (a, owner, admin))
    app.execute("SELECT runhub.add_member(%s, %s, %s, 'member')", (a, admin, owner))  # the new owner demotes the old
    assert members(conn, a)[owner] == "member" and members(conn, a)[admin] == "owner"


def test_a_demoted_admin_loses_its_rights_at_once(conn, app, shops):
    a, owner, admin = shops["a"], shops["a_owner"], shops["a_admin"]
    app.execute("SELECT runhub.add_member(%s, %s, %s, 'member')", (a, owner, admin))
    refused(app, "SELECT runhub.add_member(%s, %s, %s, 'member')", (a, admin, uuid.uuid4()),
            "PT403", "auth.roleRequired")


# -- another project's data -----------------------------------------------------------------------

def test_app_cannot_read_suppress_or_ingest_in_another_project(conn, app, shops):
    conn.execute("SELECT runhub.ingest_event(%s, %s)", (shops["b"], Jsonb(event(customer={"email": "bee@b.example"}))))
    stranger = shops["a_owner"]
    refused(app, "SELECT runhub.list_events(%s, %s)", (shops["b"], stranger), "PT404", "projects.notFound")
    refused(app, "SELECT runhub.suppress(%s, %s, 'bee@b.example', 'manual')", (shops["b"], stranger),
            "PT404", "projects.notFound")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT runhub.ingest_event(%s, %s)", (shops["b"], Jsonb(event())))
    assert conn.execute("SELECT count(*) FROM runhub.suppressions").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM runhub.business_events").fetchone()[0] == 1


def test_suppress_needs_an_admin_and_list_events_any_member(conn, app, shops):
    a = shops["a"]
    refused(app, "SELECT runhub.suppress(%s, %s, 'x@a.example', 'manual')", (a, shops["a_member"]),
            "PT403", "auth.roleRequired")
    app.execute("SELECT runhub.suppress(%s, %s, 'x@a.example', 'manual')", (a, shops["a_admin"]))
    assert app.execute("SELECT runhub.list_events(%s, %s)", (a, shops["a_member"])).fetchone()[0]["events"] == []


def test_the_webhook_receiver_may_ingest_and_nothing_else(webhook, shops):
    assert webhook.execute("SELECT runhub.ingest_event(%s, %s)", (shops["a"], Jsonb(event()))).fetchone()[0]["inserted"]
    for sql, params in (("SELECT runhub.list_events(%s, %s)", (shops["a"], shops["a_owner"])),
                        ("SELECT runhub.list_actions(%s, %s)", (shops["a"], shops["a_owner"])),
                        ("SELECT runhub.unsubscribe('v1.x.y')", None),
                        ("SELECT count(*) FROM runhub.business_events", None)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            webhook.execute(sql, params)


# -- forged sends -----------------------------------------------------------------------------------

def test_a_client_cannot_ingest_runhubs_own_events(conn, webhook, shops):
    for kind in ("recovery_email_sent", "promo_email_sent", "onboarding_email_sent", "digest_email_sent",
                 "anything_email_sent", "runhub_attribution"):
        detail = refused(webhook, "SELECT runhub.ingest_event(%s, %s)", (shops["a"], Jsonb(event(kind))),
                         "PT400", "events.reservedForRunhub")
        assert detail == {"field": "type", "value": kind}
    for key in ("mail:<x@runhub>", "MAIL:<x@runhub>", "runhub:anything"):
        detail = refused(webhook, "SELECT runhub.ingest_event(%s, %s)",
                         (shops["a"], Jsonb(event("payment_succeeded", key=key))), "PT400", "events.reservedForRunhub")
        assert detail["field"] == "idempotencyKey"
    assert conn.execute("SELECT count(*) FROM runhub.business_events").fetchone()[0] == 0


def test_a_forged_send_can_neither_block_nor_fake_one(conn, webhook, login_as):
    """A client that learned a queued message's Message-ID tries to take its sent event's key first;
    when the sender delivers, the real *_email_sent event is written all the same."""
    project, _, run = onboarding_run(conn, ["new@shop.example"])
    process_runs(conn)
    message_id = conn.execute("SELECT message_id FROM runhub.outbox WHERE run_id = %s", (run,)).fetchone()[0]
    refused(webhook, "SELECT runhub.ingest_event(%s, %s)",
            (project, Jsonb(event("payment_succeeded", key=f"mail:{message_id}", amountCents=100, currency="EUR"))),
            "PT400", "events.reservedForRunhub")
    sender_conn = psycopg.connect(login_as("runhub_sender"), autocommit=True)
    with sender_conn:
        [(message,)] = sender_conn.execute("SELECT runhub.claim_messages('w1', 10, 60)").fetchall()
        sender_conn.execute("SELECT runhub.start_messages('w1', %s)", ([message["id"]],))
        assert sender_conn.execute("SELECT runhub.record_sent(%s, 'w1', '250 ok')",
                                   (message["id"],)).fetchone()[0] == "sent"
    sent = conn.execute("SELECT event_type, payload ->> 'workflowRunId' FROM runhub.business_events"
                        " WHERE project_id = %s AND idempotency_key = %s", (project, f"mail:{message_id}")).fetchall()
    assert sent == [("onboarding_email_sent", str(run))]


# -- bounded echo, timestamps ---------------------------------------------------------------------------

def test_a_huge_value_is_echoed_cut_to_200_characters(app, shops):
    with pytest.raises(psycopg.Error) as excinfo:
        app.execute("SELECT runhub.list_events(%s, %s, %s)", (shops["a"], shops["a_owner"], "y" * 5_000_000))
    detail = assert_refused(excinfo, "PT400", "events.invalidSort")
    assert detail["sort"] == "y" * 200 + "… (4999800 more characters)"
    assert len(excinfo.value.diag.message_hint) < 400


@pytest.mark.parametrize("at", ["infinity", "-infinity", "294276-12-31 23:59:59+00", "1999-12-31 23:59:59+00",
                                "2999-01-01 00:00:00+00"])
def test_create_run_refuses_an_implausible_client_time(conn, app, at):
    project, owner = ready_shop(conn)
    before = conn.execute("SELECT count(*) FROM runhub.workflow_runs").fetchone()[0]
    detail = refused(app, "SELECT runhub.create_run(%s, %s, 'onboard_users', 'k', '{}', %s::timestamptz)",
                     (project, owner, at), "PT400", "workflows.invalidParams")
    assert detail["field"] == "clientRequestedAt"
    assert conn.execute("SELECT count(*) FROM runhub.workflow_runs").fetchone()[0] == before


def test_create_run_keeps_a_plausible_client_time(conn, app):
    project, owner = ready_shop(conn)
    conn.execute("SELECT runhub.ingest_event(%s, %s)",
                 (project, Jsonb(event("user_signed_up", at=ago(1), customer={"email": "s@shop.example"}))))
    preview(app, project, owner, "onboard_users")
    at = ago(0.01)
    run = app.execute("SELECT runhub.create_run(%s, %s, 'onboard_users', 'k', '{}', %s::timestamptz)",
                      (project, owner, at)).fetchone()[0]["runId"]
    got = app.execute("SELECT runhub.get_run(%s, %s, %s)", (project, owner, run)).fetchone()[0]
    assert got["clientRequestedAt"] is not None


def test_a_client_cannot_move_runhubs_clock_past_the_rate_limit(conn, app, db_clock):
    """The create_run rate limit counts per minute of runhub's clock (runhub._now()), whose shift is a
    row only the owner and superusers may change: no privilege on it, no function to call, and no
    setting a session could SET. The 11th call of a minute stays refused whatever the client tries."""
    project, owner = ready_shop(conn)
    signup(conn, project, "new@example.com")
    preview(app, project, owner, "onboard_users")
    minute = db_clock(0)
    shift = conn.execute("SELECT shift FROM runhub.clock_offset").fetchone()[0]
    for _ in range(10):  # a run, then nine replays: each counted
        create_run(app, project, owner, "onboard_users", "k")
    for sql in ["UPDATE runhub.clock_offset SET shift = interval '1 hour'",
                "INSERT INTO runhub.clock_offset (singleton, shift) VALUES (true, interval '1 hour')"
                " ON CONFLICT (singleton) DO UPDATE SET shift = excluded.shift",
                "DELETE FROM runhub.clock_offset",
                "TRUNCATE runhub.clock_offset",
                "SELECT runhub._now()",
                "SELECT runhub._clock_offset()"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(sql)
    for setting in ("runhub.clock_offset", "runhub.now", "runhub.clock"):
        app.execute(f"SET {setting} = '1 hour'")  # anyone may SET a custom setting: runhub's clock reads none
    app.execute("SET TIME ZONE 'Pacific/Kiritimati'")  # nor does a session's zone move its minute
    refused(app, "SELECT runhub.create_run(%s, %s, 'onboard_users', 'k')", (project, owner),
            "PT429", "workflows.policy.rateLimited")
    assert conn.execute("SELECT shift FROM runhub.clock_offset").fetchone()[0] == shift
    assert clock_minute(conn) == minute, "the calls must fall in one minute of runhub's clock"


# -- each component works with only its own role ------------------------------------------------------

def test_the_sender_delivers_as_a_login_granted_only_runhub_sender(conn, login_as):
    """`runhub sender --until-idle` (what `runhub up` runs) executes, delivers and notices it is idle
    through its own functions, without reading a table."""
    project, owner, run = onboarding_run(conn, [f"user{i}@shop.example" for i in range(3)])
    sink = ScriptedSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        logs.setup("text")
        config = SenderConfig(database_url=login_as("runhub_sender"),
                              smtp=SmtpConfig.from_url(f"smtp://127.0.0.1:{controller.port}"),
                              poll_seconds=0.5, concurrency=2, exit_when_idle=True,
                              unsubscribe_url="https://app.example/u?token={token}")
        done = []
        thread = threading.Thread(target=lambda: done.append(Sender(config).run()), daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive() and done == [0], "the sender exits 0 once idle"
    finally:
        controller.stop()
    assert run_status(conn, run) == "succeeded"
    assert sorted(m["To"].addresses[0].addr_spec for m in sink.accepted) == [f"user{i}@shop.example" for i in range(3)]


def test_the_app_runs_a_whole_workflow_as_a_login_granted_only_runhub_app(conn, app, login_as):
    project = app.execute("SELECT runhub.create_project('Shop', %s, 'Europe/Paris', 'EUR')",
                          (owner := uuid.uuid4(),)).fetchone()[0]
    app.execute("SELECT runhub.update_project_settings(%s, %s, %s)",
                (project, owner, Jsonb({"integrations": ["email"]})))
    with psycopg.connect(login_as("runhub_ingest"), autocommit=True) as webhook:
        webhook.execute("SELECT runhub.ingest_event(%s, %s)",
                        (project, Jsonb(event("user_signed_up", at=ago(1), customer={"email": "s@shop.example"}))))
    shown = preview(app, project, owner, "onboard_users")
    assert shown["count"] == 1
    run = create_run(app, project, owner, "onboard_users", "first", preview_id=shown["previewId"])["runId"]
    with psycopg.connect(login_as("runhub_sender"), autocommit=True) as sender:
        assert process_runs(sender) == 1
    assert app.execute("SELECT runhub.get_run(%s, %s, %s)", (project, owner, run)).fetchone()[0]["status"] == "running"
    assert app.execute("SELECT runhub.list_runs(%s, %s)", (project, owner)).fetchone()[0][0]["id"] == str(run)
    assert len(app.execute("SELECT runhub.list_actions(%s, %s)", (project, owner)).fetchone()[0]) == 3


# -- the sender records only what it holds ------------------------------------------------------------

def test_a_sender_login_cannot_mark_sent_a_message_it_never_claimed(conn, login_as):
    """A forged "sent" of a queued message (record_sent_many took any queued or sending message,
    whatever the worker and lease) wrote its *_email_sent event, made the run succeed without a mail
    and got a payment through the run's link credited at high confidence. Now: the same answer as
    for an unknown id, and nothing written; claimed by another worker, the same again."""
    from helpers.attribution import credit, pay

    project, _, run = onboarding_run(conn, ["new@shop.example"])
    process_runs(conn)
    [message] = [r[0] for r in conn.execute("SELECT id FROM runhub.outbox WHERE run_id = %s", (run,))]
    with psycopg.connect(login_as("runhub_sender"), autocommit=True) as sender:
        forged = "SELECT * FROM runhub.record_sent_many('forger', %s, %s)"
        assert sender.execute(forged, ([message, 987654321], ["250 ok", "250 ok"])).fetchall() == [
            (message, "lease_lost"), (987654321, "lease_lost")], "queued and unknown answer alike"
        [(claimed,)] = sender.execute("SELECT runhub.claim_messages('honest', 10, 60)").fetchall()
        assert claimed["id"] == message
        assert sender.execute(forged, ([message], ["250 ok"])).fetchall() == [(message, "lease_lost")], \
            "another worker's message: the same"
        assert sender.execute("SELECT runhub.record_failure(%s, 'forger', 550, '550 no such user')",
                              (message,)).fetchone()[0] == "lease_lost"
    assert conn.execute("SELECT status, lease_owner FROM runhub.outbox WHERE id = %s", (message,)).fetchone() == (
        "sending", "honest")
    assert conn.execute("SELECT count(*) FROM runhub.business_events WHERE project_id = %s"
                        " AND event_type ~ '_email_sent$'", (project,)).fetchone()[0] == 0
    assert run_status(conn, run) == "running"
    payment = pay(conn, project, email="new@shop.example", wid=run, amount=1000, currency="EUR")
    assert credit(conn, payment) is None, "a mail never sent earns no credit"


def test_types_a_caller_makes_in_pg_temp_do_not_change_the_digest_job(conn, login_as):
    """run_due_digests is a procedure (it commits between batches), so it can have no search_path of
    its own: the caller's applies, and pg_temp comes first in it for types. A sender login's
    pg_temp.jsonb broke the job's own call; every type and operator it names is qualified now."""
    with psycopg.connect(login_as("runhub_sender"), autocommit=True) as sender:
        for name in ("jsonb", "int4", "int8", "text", "bool"):
            sender.execute(f"CREATE TYPE pg_temp.{name} AS (x int)")
        assert sender.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0] == 0
        sender.execute("DISCARD TEMP")  # now: a backend drops its temp types only as it exits, after the role's teardown


def _process_runs_calls(conn) -> int:
    row = conn.execute("SELECT calls FROM pg_stat_user_functions WHERE schemaname = 'runhub'"
                       " AND funcname = 'process_runs'").fetchone()
    return row[0] if row else 0


@pytest.mark.parametrize("channel", ["runhub_runs", "runhub_outbox"])
def test_a_flood_of_forged_wakeups_costs_the_sender_no_more_than_polling(conn, login_as, channel):
    """Any login may NOTIFY runhub's channels (PostgreSQL has no privilege on NOTIFY). A reader login
    sends thousands of NOTIFYs, each its own transaction: the sender catches up (process_runs, then a
    claim) at most once per wake_seconds, as a sender polling that often would, counted by the server
    itself; before, every NOTIFY was a catch-up. It still wakes on them: the flood is not ignored."""
    sender_url = login_as("runhub_sender")
    sender_role = psycopg.conninfo.conninfo_to_dict(sender_url)["user"]
    conn.execute(f'ALTER ROLE "{sender_role}" SET track_functions = \'all\'')
    controller = Controller(ScriptedSink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    wake_seconds = 0.25
    config = SenderConfig(database_url=sender_url, smtp=SmtpConfig.from_url(f"smtp://127.0.0.1:{controller.port}"),
                          poll_seconds=300, wake_seconds=wake_seconds, concurrency=1)
    daemon = Sender(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    try:
        logs.setup("text")
        thread.start()
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state = 'idle'"
            " AND query LIKE '%%claim_messages%%'", (sender_role,)).fetchone()[0] == 1, "the sender to wait")
        started = time.monotonic()
        flood_began = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        with psycopg.connect(login_as("runhub_reader"), autocommit=True) as forger:
            for i in range(3000):
                forger.execute("SELECT pg_notify(%s, %s)", (channel, str(i)))
        flooded = time.monotonic() - started
        # Woken, it catches up once wake_seconds have passed since its last catch-up: maybe after a
        # short flood has ended. Stopped before then, it would not catch up at all.
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND query LIKE '%%claim_messages%%'"
            " AND query_start > %s", (sender_role, flood_began)).fetchone()[0] >= 1, "the sender to catch up")
    finally:
        daemon.stop()
        thread.join(timeout=30)
        controller.stop()
    assert not thread.is_alive()
    wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                    (sender_role,)).fetchone()[0] == 0, "the sender's sessions to end")
    ran = time.monotonic() - started  # the flood, and the sender's stop after it
    catch_ups = _process_runs_calls(conn) - 1  # its first, on starting
    polling = ran / wake_seconds + 1  # what a sender polling every wake_seconds makes in that time
    assert 1 <= catch_ups <= polling, (catch_ups, polling, flooded)
