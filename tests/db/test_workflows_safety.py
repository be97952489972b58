"""Workflows, "Idempotency & Safety": idempotent replays, the per-project rate limit under real
concurrency, both policy layers (trigger time in create_run, execution time in execute_run), the
error contract of every policy refusal, and the double click. Concurrent callers are real sessions,
one connection each, released together by a barrier or ordered by watching pg_stat_activity."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.db import DEADLINE_SECONDS, assert_refused, blocked_by, ingest, set_clock, wait_until
from helpers.workflows import (PROMO, SETTINGS, add_member, ago, attempt, checkout, checkouts, connect, create_run,
                               clock_minute, get_run, outbox, preview, process_runs, race, ready_shop, recipients,
                               run_row, runs_of, signup, snapshot)

RECOVER = "recover_abandoned"


def _recover_ready(conn, n=3):
    """A project whose owner has previewed recover_abandoned for n fresh checkouts."""
    project, owner = ready_shop(conn)
    checkouts(conn, project, n)
    p = preview(conn, project, owner, RECOVER)
    assert p["count"] == n and "blocked" not in p, p
    return project, owner


def _errors(results):
    return [(r[1], r[2]) for r in results if r[0] == "err"]


# -- (a) idempotent replay ---------------------------------------------------------------------

def test_replay_returns_the_same_run_and_never_a_second_set_of_messages(conn):
    project, owner = _recover_ready(conn, 3)
    first = create_run(conn, project, owner, RECOVER, "click-1")
    assert first == {"runId": first["runId"], "status": "queued", "deduplicated": False}

    replay = create_run(conn, project, owner, RECOVER, "click-1")
    assert replay == {"runId": first["runId"], "status": "queued", "deduplicated": True}
    assert runs_of(conn, project) == [uuid.UUID(first["runId"])]

    assert process_runs(conn) == 1
    written = recipients(conn, first["runId"]), outbox(conn, first["runId"])
    assert len(written[0]) == 3 and len(written[1]) == 3

    # After execution the replay reports the run's real status, and nothing runs again.
    replay = create_run(conn, project, owner, RECOVER, "click-1")
    assert replay == {"runId": first["runId"], "status": "running", "deduplicated": True}
    assert process_runs(conn) == 0
    assert process_runs(conn) == 0
    assert (recipients(conn, first["runId"]), outbox(conn, first["runId"])) == written
    assert runs_of(conn, project) == [uuid.UUID(first["runId"])]
    assert len({m[3] for m in written[1]}) == 3, "one Message-ID per message"
    assert run_row(conn, first["runId"])["attempts"] == 1


def test_replay_is_answered_before_the_cooldown_and_preview_rules(conn):
    """Idempotency comes before the trigger-time policy: a replay while the cooldown it started is
    active, or after its preview expired, still gets the run; a new key gets the cooldown."""
    project, owner = _recover_ready(conn, 2)
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    conn.execute("UPDATE runhub.previews SET created_at = now() - interval '1 hour' WHERE project_id = %s", (project,))
    assert create_run(conn, project, owner, RECOVER, "k") == {"runId": run, "status": "queued", "deduplicated": True}
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "k2")
    assert_refused(exc, "PT409", "workflows.policy.alreadyQueued")  # the cooldown of a run not yet executed
    assert len(runs_of(conn, project)) == 1


def test_replay_with_other_params_is_refused_and_equal_params_with_defaults_are_a_replay(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    preview(conn, project, owner, "send_promo", PROMO)
    run = create_run(conn, project, owner, "send_promo", "promo-1", PROMO)["runId"]
    # The same params spelled with their defaults are the same params.
    same = PROMO | {"segmentation": "recent_30d", "isUpdate": False}
    assert create_run(conn, project, owner, "send_promo", "promo-1", same)["deduplicated"] is True
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, "send_promo", "promo-1", PROMO | {"subject": "Other"})
    assert assert_refused(exc, "PT409", "workflows.idempotencyKeyReused") == {"runId": run}
    assert snapshot(conn) == before


def test_the_same_key_for_another_action_is_another_run(conn):
    project, owner = _recover_ready(conn, 2)
    signup(conn, project, "new@ex.com", hours=2)
    preview(conn, project, owner, "onboard_users")
    a = create_run(conn, project, owner, RECOVER, "same-key")
    b = create_run(conn, project, owner, "onboard_users", "same-key")
    assert a["runId"] != b["runId"] and not a["deduplicated"] and not b["deduplicated"]


# -- (b) 50 concurrent calls, one key ----------------------------------------------------------

def test_50_concurrent_calls_with_one_key_make_exactly_one_run(conn, open_sessions, db_clock):
    project, owner = _recover_ready(conn, 3)
    sessions = open_sessions(50)
    minute = db_clock(0)
    results = race(sessions, lambda i, c: create_run(c, project, owner, RECOVER, "one-key"))
    assert clock_minute(conn) == minute, "the calls must fall in one clock minute for the counts below"

    runs = runs_of(conn, project)
    assert len(runs) == 1
    ok = [r[1] for r in results if r[0] == "ok"]
    assert {r["runId"] for r in ok} == {str(runs[0])}
    assert sum(not r["deduplicated"] for r in ok) == 1, ok
    assert {r["status"] for r in ok} == {"queued"}
    # Every call that returns counts: 10 get through the limiter (one creates, nine are replays), 40 are refused.
    assert len(ok) == 10
    assert _errors(results) == [("PT429", "workflows.policy.rateLimited")] * 40

    assert process_runs(conn) == 1
    assert len(recipients(conn, runs[0])) == 3 and len(outbox(conn, runs[0])) == 3


# -- (c) the rate limit ------------------------------------------------------------------------

def test_rate_limit_is_exact_under_30_concurrent_calls(conn, open_sessions, db_clock):
    """30 sessions at once: 15 replay the project's run (each counts when answered), 15 ask for new
    runs that its cooldown refuses (refused: not counted). Exactly 10 replays are answered; every
    other call is refused, and the count ends at 10."""
    project, owner = _recover_ready(conn, 2)
    run = create_run(conn, project, owner, RECOVER, "first")["runId"]
    sessions = open_sessions(30)
    minute = db_clock(0)
    results = race(sessions, lambda i, c: create_run(c, project, owner, RECOVER, "first" if i % 2 else f"key-{i}"))
    assert clock_minute(conn) == minute, "the calls must fall in one clock minute for the counts below"

    replays, new_keys = results[1::2], results[0::2]
    assert sorted(r[0] for r in replays) == ["err"] * 5 + ["ok"] * 10
    assert {r[1]["runId"] for r in replays if r[0] == "ok"} == {run}
    assert {(r[1], r[2]) for r in replays if r[0] == "err"} == {("PT429", "workflows.policy.rateLimited")}
    assert {(r[1], r[2]) for r in new_keys} <= {("PT429", "workflows.policy.rateLimited"),
                                                 ("PT409", "workflows.policy.alreadyQueued")}
    for r in results:
        if r[0] == "err" and r[1] == "PT429":
            assert r[3]["limit"] == 10 and r[3]["windowSeconds"] == 60 and 1 <= r[3]["retryAfterSeconds"] <= 60
    assert conn.execute("SELECT minute, calls FROM runhub.create_run_counts WHERE project_id = %s",
                        (project,)).fetchone() == (minute, 10)
    assert runs_of(conn, project) == [uuid.UUID(run)]


def test_refused_calls_are_not_counted(conn, db_clock):
    """A refused call rolls back whole, its count with it: twenty calls refused by another rule leave
    the project its ten; the 11th that returns is the one rate limited, and writes nothing."""
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    minute = db_clock(0)
    refusals = []
    for i in range(20):
        with pytest.raises(psycopg.Error) as exc:
            create_run(conn, project, owner, RECOVER, f"k{i}")  # no preview yet
        refusals.append(assert_refused(exc, "PT422", "workflows.policy.previewRequired"))
    assert refusals == [{"maxAgeMinutes": 15}] * 20
    preview(conn, project, owner, RECOVER)
    answered = [create_run(conn, project, owner, RECOVER, "valid") for _ in range(10)]
    assert [a["deduplicated"] for a in answered] == [False] + [True] * 9
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "valid")
    assert_refused(exc, "PT429", "workflows.policy.rateLimited")
    assert clock_minute(conn) == minute, "the calls must fall in one clock minute"
    assert snapshot(conn) == before


def test_calls_that_return_count_and_the_11th_replay_is_limited(conn, db_clock):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    minute = db_clock(0)
    outcomes = [attempt(create_run, conn, project, owner, RECOVER, "")[2],                    # bad key
                attempt(create_run, conn, project, owner, RECOVER, "k", {"x": 1})[2],         # unknown param
                attempt(create_run, conn, project, owner, RECOVER, "k")[2]]                   # no preview
    preview(conn, project, owner, RECOVER)
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]                             # 1: created
    outcomes += [attempt(create_run, conn, project, owner, RECOVER, "k")[1]["deduplicated"] for _ in range(3)]
    outcomes += [attempt(create_run, conn, project, owner, RECOVER, f"k{i}")[2] for i in range(3)]  # cooldown
    assert outcomes == ["workflows.invalidParams", "workflows.unknownParam", "workflows.policy.previewRequired",
                        True, True, True] + ["workflows.policy.alreadyQueued"] * 3
    # 4 calls returned so far: six more replays are answered, the 11th is refused.
    assert [create_run(conn, project, owner, RECOVER, "k")["deduplicated"] for _ in range(6)] == [True] * 6
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "k")
    assert_refused(exc, "PT429", "workflows.policy.rateLimited")
    assert clock_minute(conn) == minute, "the calls must fall in one clock minute"
    assert runs_of(conn, project) == [uuid.UUID(run)]


def test_calls_refused_for_membership_or_role_are_not_counted_and_limits_are_per_project(conn, db_clock):
    project, owner = _recover_ready(conn, 2)
    other, other_owner = _recover_ready(conn, 2)
    member = add_member(conn, project, owner, "member")
    minute = db_clock(0)
    for i in range(12):
        with pytest.raises(psycopg.Error) as exc:
            create_run(conn, project, member, RECOVER, f"m{i}")
        assert_refused(exc, "PT403", "auth.roleRequired")
        with pytest.raises(psycopg.Error) as exc:
            create_run(conn, project, uuid.uuid4(), RECOVER, f"x{i}")
        assert_refused(exc, "PT404", "projects.notFound")
    for i in range(11):  # exhaust the other project's limit
        attempt(create_run, conn, other, other_owner, RECOVER, f"o{i}")
    assert create_run(conn, project, owner, RECOVER, "owner")["deduplicated"] is False
    assert clock_minute(conn) == minute, "the calls must fall in one clock minute"


# -- (d) two policy layers ---------------------------------------------------------------------

def _assert_failed_at_execution(conn, project, actor, run, reason, params):
    status = run_row(conn, run)
    assert status["status"] == "failed", status
    hint = conn.execute("SELECT runhub._hint(%s, %s)", (reason, Jsonb(params))).fetchone()[0]
    assert status["result"] == {"totalRecipients": 0, "successful": 0, "failed": 0, "errorSummary": hint,
                                "reason": reason, "reasonParams": params}
    assert status["completed_at"] is not None and status["executed_at"] is None
    assert status["lease_owner"] is None and status["lease_expires_at"] is None
    assert recipients(conn, run) == [] and outbox(conn, run) == []
    if actor is not None:
        assert get_run(conn, project, actor, run)["result"]["reason"] == reason


def test_trigger_time_cooldown_then_released_by_cancel(conn):
    project, owner = _recover_ready(conn, 2)
    first = create_run(conn, project, owner, RECOVER, "a")["runId"]
    preview(conn, project, owner, RECOVER)
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "b")
    assert assert_refused(exc, "PT409", "workflows.policy.alreadyQueued") == {"minutes": 60, "cooldownMinutes": 60}
    assert snapshot(conn) == before
    blocked = preview(conn, project, owner, RECOVER)["blocked"]
    assert blocked == {"reason": "workflows.policy.alreadyQueued", "reasonParams": {"minutes": 60, "cooldownMinutes": 60},
                       "text": "A run of this action is already queued and has sent nothing yet: it can run again in 60 min"}
    # A cancelled run sent nothing and does not hold the cooldown.
    conn.execute("SELECT runhub.cancel_run(%s, %s, %s)", (project, owner, first))
    assert create_run(conn, project, owner, RECOVER, "c")["deduplicated"] is False


PREVIEW_MISMATCHES = {
    "none": lambda conn, p, owner, other: None,
    "another action": lambda conn, p, owner, other: preview(conn, p, owner, "onboard_users"),
    "other params": lambda conn, p, owner, other: preview(conn, p, owner, "send_promo", PROMO | {"subject": "Other"}),
    "another actor": lambda conn, p, owner, other: preview(conn, p, other, "send_promo", PROMO),
    "too old": lambda conn, p, owner, other: (
        preview(conn, p, owner, "send_promo", PROMO),
        conn.execute("UPDATE runhub.previews SET created_at = now() - interval '15 minutes 1 second'")),
    "preview_id of another preview": lambda conn, p, owner, other: preview(conn, p, owner, "send_promo", PROMO),
}


@pytest.mark.parametrize("case", sorted(PREVIEW_MISMATCHES))
def test_trigger_time_preview_required(conn, case):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    signup(conn, project, "s@ex.com")
    other_owner = add_member(conn, project, owner, "owner")
    PREVIEW_MISMATCHES[case](conn, project, owner, other_owner)
    preview_id = None
    if case == "preview_id of another preview":  # a matching preview exists, but the id names another
        preview_id = preview(conn, project, owner, "send_promo", PROMO | {"subject": "Other"})["previewId"]
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, "send_promo", "k", PROMO, preview_id=preview_id)
    assert assert_refused(exc, "PT422", "workflows.policy.previewRequired") == {"maxAgeMinutes": 15}
    assert snapshot(conn) == before


def test_trigger_time_preview_accepted_by_id_with_defaults_and_when_recent(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    p = preview(conn, project, owner, "send_promo", PROMO)
    conn.execute("UPDATE runhub.previews SET created_at = now() - interval '14 minutes'")
    spelled_out = PROMO | {"segmentation": "recent_30d", "isUpdate": False}
    run = create_run(conn, project, owner, "send_promo", "k", spelled_out, preview_id=p["previewId"])
    assert run_row(conn, run["runId"])["preview_id"] == uuid.UUID(p["previewId"])
    assert run_row(conn, run["runId"])["recipient_count_estimate"] == 2


def test_trigger_time_no_recipients_is_decided_on_the_previews_count(conn):
    project, owner = ready_shop(conn)
    checkout(conn, project, "old@ex.com", hours=30)  # outside the 24 h window: prerequisite met, nobody to mail
    p = preview(conn, project, owner, RECOVER)
    assert p["count"] == 0 and p["sample"] == []
    assert p["blocked"] == {"reason": "workflows.policy.noRecipients", "reasonParams": {"count": 0, "min": 1},
                            "text": "Nobody to e-mail: 0 recipient(s), at least 1 needed"}
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "k")
    assert assert_refused(exc, "PT422", "workflows.policy.noRecipients") == {"count": 0, "min": 1}
    checkout(conn, project, "new@ex.com", hours=1)  # the audience grew, but the preview says 0
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "k")
    assert_refused(exc, "PT422", "workflows.policy.noRecipients")
    assert runs_of(conn, project) == []
    preview(conn, project, owner, RECOVER)
    assert create_run(conn, project, owner, RECOVER, "k")["deduplicated"] is False


def test_trigger_time_too_many_recipients_is_decided_on_the_previews_count(conn):
    conn.execute("""UPDATE runhub.actions SET policy = policy || '{"maxRecipients": 2}' WHERE id = %s""", (RECOVER,))
    project, owner = ready_shop(conn)
    checkouts(conn, project, 3)
    p = preview(conn, project, owner, RECOVER)
    assert p["count"] == 3
    assert p["blocked"] == {"reason": "workflows.policy.tooManyRecipients", "reasonParams": {"count": 3, "max": 2},
                            "text": "Too many recipients: 3, at most 2"}
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as exc:
        create_run(conn, project, owner, RECOVER, "k")
    assert assert_refused(exc, "PT422", "workflows.policy.tooManyRecipients") == {"count": 3, "max": 2}
    assert snapshot(conn) == before


def test_preview_warns_from_the_threshold_without_blocking(conn):
    conn.execute("""UPDATE runhub.actions SET policy = policy || '{"warnAtRecipients": 3}' WHERE id = %s""", (RECOVER,))
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    assert preview(conn, project, owner, RECOVER)["warnings"] == []
    checkouts(conn, project, 1, prefix="third")
    p = preview(conn, project, owner, RECOVER)
    assert p["warnings"] == [{"key": "owner.warning.manyRecipients", "params": {"count": 3},
                              "text": "This will e-mail 3 people"}] and "blocked" not in p
    assert create_run(conn, project, owner, RECOVER, "k")["deduplicated"] is False


def test_execution_time_recipients_grew_past_the_maximum_after_the_preview(conn):
    conn.execute("UPDATE runhub.actions SET policy = jsonb_set(policy, '{maxRecipients}', '5') WHERE id = %s",
                 (RECOVER,))
    project, owner = ready_shop(conn)
    checkouts(conn, project, 5)
    p = preview(conn, project, owner, RECOVER)
    assert p["count"] == 5 and "blocked" not in p
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    checkouts(conn, project, 3, prefix="late")  # three more abandon their carts before the run executes
    assert process_runs(conn) == 1
    _assert_failed_at_execution(conn, project, owner, run, "workflows.policy.tooManyRecipients", {"count": 8, "max": 5})
    # A failed run sent nothing and does not hold the cooldown.
    conn.execute("UPDATE runhub.actions SET policy = jsonb_set(policy, '{maxRecipients}', '1000') WHERE id = %s",
                 (RECOVER,))
    assert preview(conn, project, owner, RECOVER)["count"] == 8
    again = create_run(conn, project, owner, RECOVER, "k2")["runId"]
    assert process_runs(conn) == 1
    assert len(recipients(conn, again)) == 8


def test_execution_time_audience_emptied_after_the_preview(conn):
    project, owner = ready_shop(conn)
    cart = checkout(conn, project, "ann@ex.com", hours=2)
    assert preview(conn, project, owner, RECOVER)["count"] == 1
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    ingest(conn, project, {"type": "payment_succeeded", "occurredAt": ago(0.5), "idempotencyKey": "pay",
                           "correlationId": cart, "amountCents": 4200, "currency": "EUR"})
    assert process_runs(conn) == 1
    _assert_failed_at_execution(conn, project, owner, run, "workflows.policy.noRecipients", {"count": 0, "min": 1})


def test_execution_time_owner_demoted_after_create_run(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    other_owner = add_member(conn, project, owner, "owner")  # someone else keeps the project owned
    preview(conn, project, owner, "send_promo", PROMO)
    run = create_run(conn, project, owner, "send_promo", "k", PROMO)["runId"]
    conn.execute("SELECT runhub.add_member(%s, %s, %s, 'admin')", (project, other_owner, owner))
    assert process_runs(conn) == 1
    _assert_failed_at_execution(conn, project, owner, run, "workflows.policy.ownerRequired",
                                {"required": "owner", "role": "admin"})


def test_execution_time_admin_demoted_to_member_after_create_run(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    admin = add_member(conn, project, owner, "admin")
    preview(conn, project, admin, RECOVER)
    run = create_run(conn, project, admin, RECOVER, "k")["runId"]
    conn.execute("SELECT runhub.add_member(%s, %s, %s, 'member')", (project, owner, admin))
    assert process_runs(conn) == 1
    _assert_failed_at_execution(conn, project, owner, run, "auth.roleRequired", {"required": "admin", "role": "member"})


def test_execution_time_actor_removed_after_create_run(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    admin = add_member(conn, project, owner, "admin")
    preview(conn, project, admin, RECOVER)
    run = create_run(conn, project, admin, RECOVER, "k")["runId"]
    conn.execute("DELETE FROM runhub.project_members WHERE project_id = %s AND user_id = %s", (project, admin))
    assert process_runs(conn) == 1
    _assert_failed_at_execution(conn, project, owner, run, "workflows.policy.actorNotMember", {"required": "admin"})


def test_execution_never_writes_a_recovery_message_without_its_link(conn):
    """The shop URL is removed between create_run and execution: a recovery e-mail without its
    checkout link is useless, so execution must refuse (as create_run would) rather than send it."""
    project, owner = _recover_ready(conn, 2)
    run = create_run(conn, project, owner, RECOVER, "k")["runId"]
    conn.execute("SELECT runhub.update_project_settings(%s, %s, '{\"shopUrl\": null}')", (project, owner))
    assert process_runs(conn) == 1
    links = [r[3] for r in recipients(conn, run)]
    status = run_row(conn, run)
    assert status["status"] == "failed" or (links and all(link and link.startswith("http") for link in links)), (
        status["status"], links, outbox(conn, run))


def test_execution_time_actor_promoted_still_runs(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 2)
    admin = add_member(conn, project, owner, "admin")
    preview(conn, project, admin, RECOVER)
    run = create_run(conn, project, admin, RECOVER, "k")["runId"]
    conn.execute("SELECT runhub.add_member(%s, %s, %s, 'owner')", (project, owner, admin))
    assert process_runs(conn) == 1
    assert run_row(conn, run)["status"] == "running" and len(outbox(conn, run)) == 2


# -- (e) every refusal: its SQLSTATE, its i18n key, and nothing written ------------------------

def _world(conn):
    project, owner = ready_shop(conn)
    checkouts(conn, project, 3)
    signup(conn, project, "s@ex.com")
    return {"project": project, "owner": owner, "admin": add_member(conn, project, owner, "admin"),
            "member": add_member(conn, project, owner, "member")}


def _bare(conn, settings, events=()):
    """A project with these settings and events only."""
    project, owner = ready_shop(conn, settings=settings)
    for body in events:
        ingest(conn, project, body)
    return {"project": project, "owner": owner}


def _setup_rate_limited(conn, w):
    set_clock(conn, 0)  # the test's db_clock fixture puts it back
    preview(conn, w["project"], w["owner"], RECOVER)
    for i in range(10):
        attempt(create_run, conn, w["project"], w["owner"], RECOVER, "k")


def _setup_key_reused(conn, w):
    preview(conn, w["project"], w["owner"], "send_promo", PROMO)
    create_run(conn, w["project"], w["owner"], "send_promo", "k", PROMO)


def _setup_queued(conn, w):
    preview(conn, w["project"], w["owner"], RECOVER)
    create_run(conn, w["project"], w["owner"], RECOVER, "k")


def _setup_cooldown(conn, w):
    _setup_queued(conn, w)
    process_runs(conn)  # executed: its mail is going out


def _setup_too_many(conn, w):
    conn.execute("""UPDATE runhub.actions SET policy = policy || '{"maxRecipients": 2}' WHERE id = %s""", (RECOVER,))


def _old_checkout_only(conn):
    return _bare(conn, SETTINGS, [{"type": "checkout_started", "occurredAt": ago(30), "idempotencyKey": "c",
                                   "customer": {"email": "old@ex.com"}}])


def _old_customers_only(conn):
    return _bare(conn, SETTINGS, [{"type": "page_viewed", "occurredAt": ago(24 * 40), "idempotencyKey": "v",
                                   "customer": {"email": "old@ex.com"}}])


# id: (world, setup, actor, action, key, params, SQLSTATE, i18n key, detail (subset), preview behaviour)
#     preview behaviour: "raises" the same error, "blocked" with the same reason, or None (not a preview rule)
REFUSALS = {
    "non-member": (_world, None, "stranger", RECOVER, "k", {}, "PT404", "projects.notFound", {}, "raises"),
    "unknown project": ("nowhere", None, "owner", RECOVER, "k", {}, "PT404", "projects.notFound", {}, "raises"),
    "unknown action": (_world, None, "owner", "nuke_everything", "k", {}, "PT404", "workflows.actionNotFound",
                       {"actionId": "nuke_everything"}, "raises"),
    "role below admin": (_world, None, "member", RECOVER, "k", {}, "PT403", "auth.roleRequired",
                         {"required": "admin", "role": "member"}, "raises"),
    "owner-only action": (_world, None, "admin", "send_promo", "k", PROMO, "PT403", "workflows.policy.ownerRequired",
                          {"required": "owner", "role": "admin"}, "raises"),
    "rate limited": (_world, _setup_rate_limited, "owner", RECOVER, "k", {}, "PT429", "workflows.policy.rateLimited",
                     {"limit": 10, "windowSeconds": 60}, None),
    "empty key": (_world, None, "owner", RECOVER, "", {}, "PT400", "workflows.invalidParams",
                  {"field": "idempotencyKey"}, None),
    "long key": (_world, None, "owner", RECOVER, "k" * 256, {}, "PT400", "workflows.invalidParams",
                 {"field": "idempotencyKey"}, None),
    "unknown param": (_world, None, "owner", RECOVER, "k", {"limit": 5}, "PT400", "workflows.unknownParam",
                      {"field": "limit", "actionId": RECOVER}, "raises"),
    "params not an object": (_world, None, "owner", RECOVER, "k", [1], "PT400", "workflows.invalidParams",
                             {"field": "params"}, "raises"),
    "params too large": (_world, None, "owner", "send_promo", "k", {"subject": "s", "content": "x" * 33000},
                         "PT413", "workflows.paramsTooLarge", {"maxBytes": 32768}, "raises"),
    "missing subject": (_world, None, "owner", "send_promo", "k", {"content": "c"}, "PT400",
                        "workflows.invalidParams", {"field": "subject"}, "raises"),
    "bad segmentation": (_world, None, "owner", "send_promo", "k", PROMO | {"segmentation": "yesterday"}, "PT400",
                         "workflows.invalidParams", {"field": "segmentation"}, "raises"),
    "bad isUpdate": (_world, None, "owner", "send_promo", "k", PROMO | {"isUpdate": "yes"}, "PT400",
                     "workflows.invalidParams", {"field": "isUpdate"}, "raises"),
    "key reused": (_world, _setup_key_reused, "owner", "send_promo", "k", PROMO | {"subject": "Other"}, "PT409",
                   "workflows.idempotencyKeyReused", None, None),
    "no integration": (lambda c: _bare(c, {"shopUrl": "https://shop.example"}), None, "owner", RECOVER, "k", {},
                       "PT422", "workflows.requires.integration", {"integration": "payments"}, "blocked"),
    "no shopUrl": (lambda c: _bare(c, {"integrations": ["payments"]}), None, "owner", RECOVER, "k", {},
                   "PT422", "workflows.requires.setting", {"setting": "shopUrl"}, "blocked"),
    "no checkout events": (lambda c: _bare(c, SETTINGS), None, "owner", RECOVER, "k", {},
                           "PT422", "workflows.requires.events", {"eventType": "checkout_started", "minCount": 1},
                           "blocked"),
    "no sign-up events": (lambda c: _bare(c, SETTINGS), None, "owner", "onboard_users", "k", {},
                          "PT422", "workflows.requires.events", {"eventType": "user_signed_up", "minCount": 1},
                          "blocked"),
    "no recent customers": (_old_customers_only, None, "owner", "send_promo", "k", PROMO | {"segmentation": "all"},
                            "PT422", "workflows.requires.recipients", {"source": "customers_30d"}, "blocked"),
    "cooldown": (_world, _setup_cooldown, "owner", RECOVER, "k2", {}, "PT409", "workflows.policy.cooldownActive",
                 {"cooldownMinutes": 60}, "blocked"),
    "cooldown of a queued run": (_world, _setup_queued, "owner", RECOVER, "k2", {}, "PT409",
                                 "workflows.policy.alreadyQueued", {"cooldownMinutes": 60}, "blocked"),
    "no preview": (_world, None, "owner", RECOVER, "k", {}, "PT422", "workflows.policy.previewRequired",
                   {"maxAgeMinutes": 15}, None),
    "no recipients": (_old_checkout_only, None, "owner", RECOVER, "k", {}, "PT422", "workflows.policy.noRecipients",
                      {"count": 0, "min": 1}, "blocked"),
    "too many recipients": (_world, _setup_too_many, "owner", RECOVER, "k", {}, "PT422",
                            "workflows.policy.tooManyRecipients", {"count": 3, "max": 2}, "blocked"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_every_refusal_has_its_code_and_key_and_writes_nothing(conn, case, db_clock):
    world, setup, actor_name, action, key, params, sqlstate, i18n, detail, preview_rule = REFUSALS[case]
    if world == "nowhere":
        w = {"project": uuid.uuid4(), "owner": uuid.uuid4()}
    else:
        w = world(conn)
    if setup:
        setup(conn, w)
    actor = uuid.uuid4() if actor_name == "stranger" else w[actor_name]
    if preview_rule != "raises" and case != "no preview":
        # A valid preview exists, so the rule under test is the only one that refuses.
        preview(conn, w["project"], actor, action, params)

    minute = clock_minute(conn)
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("SELECT runhub.create_run(%s, %s, %s, %s, %s)", (w["project"], actor, action, key, Jsonb(params)))
    got = assert_refused(exc, sqlstate, i18n)
    assert snapshot(conn) == before, "a refused create_run writes nothing"
    if detail is not None:
        assert got | detail == got, got
    if case == "rate limited":
        assert clock_minute(conn) == minute, "the calls must fall in one clock minute"
    hint = conn.execute("SELECT runhub._hint(%s, %s)", (i18n, Jsonb(got))).fetchone()[0]
    assert exc.value.diag.message_hint == hint

    if preview_rule == "raises":
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("SELECT runhub.preview(%s, %s, %s, %s)", (w["project"], actor, action, Jsonb(params)))
        assert assert_refused(exc, sqlstate, i18n) == got
        assert snapshot(conn) == before, "a refused preview records nothing"
    elif preview_rule == "blocked":
        p = preview(conn, w["project"], actor, action, params)
        text = conn.execute("SELECT runhub._text(p.locale, %s, %s) FROM runhub.projects p WHERE p.id = %s",
                            (i18n, Jsonb(got), w["project"])).fetchone()[0]
        assert p["blocked"] == {"reason": i18n, "reasonParams": got, "text": text} and text != i18n


def test_every_catalog_key_used_by_policy_is_in_the_catalog(conn):
    keys = {r[0]: r[1] for r in conn.execute("SELECT key, sqlstate FROM runhub.error_catalog()")}
    for case in REFUSALS.values():
        assert keys[case[7]] == case[6]


# -- (f) the double click ----------------------------------------------------------------------

@pytest.mark.parametrize("round_", range(5))
def test_double_click_makes_one_run(conn, open_sessions, round_):
    project, owner = _recover_ready(conn, 2)
    results = race(open_sessions(2), lambda i, c: create_run(c, project, owner, RECOVER, "click"))
    assert [r[0] for r in results] == ["ok", "ok"], results
    runs = runs_of(conn, project)
    assert len(runs) == 1
    assert {r[1]["runId"] for r in results} == {str(runs[0])}
    assert sorted(r[1]["deduplicated"] for r in results) == [False, True]


def test_a_create_run_in_progress_blocks_neither_ingestion_nor_previews(db_url, conn):
    """create_run serializes on the project row with NO KEY UPDATE: events and previews go on."""
    project, owner = _recover_ready(conn, 2)
    first = connect(db_url, autocommit=False)
    other = connect(db_url)
    try:
        create_run(first, project, owner, RECOVER, "k")  # holds the project row, uncommitted
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(lambda: (checkout(other, project, "late@ex.com"),
                                          preview(other, project, owner, RECOVER)["count"]))
            assert future.result(timeout=DEADLINE_SECONDS)[1] == 3
        first.commit()
    finally:
        first.close()
        other.close()
    assert len(runs_of(conn, project)) == 1


def _second_click_behind_an_open_first(db_url, conn, finish):
    """The first click's create_run is done but uncommitted; the second waits for it; then finish(first)."""
    project, owner = _recover_ready(conn, 2)
    first = connect(db_url, autocommit=False)
    second = connect(db_url)
    try:
        created = create_run(first, project, owner, RECOVER, "click")
        assert runs_of(conn, project) == []  # not visible before commit
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(attempt, create_run, second, project, owner, RECOVER, "click")
            wait_until(lambda: second.info.backend_pid in blocked_by(conn, first.info.backend_pid),
                       "the second click to wait for the first")
            assert not future.done()
            finish(first)
            result = future.result(timeout=DEADLINE_SECONDS)
        return project, created, result
    finally:
        first.close()
        second.close()


def test_second_click_waits_for_the_first_and_gets_its_run(db_url, conn):
    project, created, result = _second_click_behind_an_open_first(db_url, conn, lambda first: first.commit())
    assert result == ("ok", {"runId": created["runId"], "status": "queued", "deduplicated": True})
    assert runs_of(conn, project) == [uuid.UUID(created["runId"])]


def test_second_click_creates_the_run_when_the_first_rolls_back(db_url, conn):
    project, created, result = _second_click_behind_an_open_first(db_url, conn, lambda first: first.rollback())
    assert result[0] == "ok" and result[1]["deduplicated"] is False
    assert result[1]["runId"] != created["runId"], "the rolled-back run must not be reported"
    assert runs_of(conn, project) == [uuid.UUID(result[1]["runId"])]


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
@pytest.mark.parametrize("required", ["owner", "admin", "member"])
def test_the_role_ranks_that_spare_a_policy_call_are_the_policys(conn, role, required):
    """_authorize_action asks the policy only when _role_rank says the role is too low: the two
    orders must agree, or a role the policy refuses would pass."""
    from plpython.policy import check_role
    enough_in_sql = conn.execute("SELECT runhub._role_rank(%s) >= runhub._role_rank(%s)", (role, required)).fetchone()[0]
    assert enough_in_sql == (check_role(role, required) is None)
