"""Daily digests: the settings that schedule them, what a digest says about a local day, and the job
that serves every due project once a day — skipping but advancing, once per day however overdue,
safe to kill and to run twice at once."""
from __future__ import annotations

import datetime as dt
import threading
import uuid
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.attribution import pay, recovery_run
from helpers.db import assert_refused, blocked_by, ingest, new_project, wait_until
from helpers.workflows import ago, checkout, connect, ready_shop, signup

DIGEST_ON = {"dailyDigestEnabled": True, "dailyDigestHour": 9, "dailyDigestRecipient": "Owner@Shop.example"}


def settings(conn, project, owner, values) -> dict:
    return conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(values))).fetchone()[0]


def next_at(conn, project):
    return conn.execute("SELECT digest_next_at FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0]


def local(day: str, hhmm: str, tz: str) -> str:
    """An ISO instant for a local wall-clock time (the first of two, in a fall-back hour)."""
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=ZoneInfo(tz)).isoformat()


def event_at(conn, project, kind, at, **extra):
    ingest(conn, project, {"type": kind, "occurredAt": at, "idempotencyKey": uuid.uuid4().hex, **extra})


def digest(conn, project, day) -> dict | None:
    return conn.execute("SELECT runhub.generate_digest(%s, %s::date)", (project, day)).fetchone()[0]


def run_job(db_url, batch_size: int | None = None) -> int:
    with psycopg.connect(db_url, autocommit=True) as c:
        if batch_size:
            small_batches(c, batch_size)
        return c.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0]


def small_batches(conn, size: int) -> None:
    """The job's batch size for this session (runhub.digest_batch_size; 1000 by default)."""
    conn.execute("SELECT set_config('runhub.digest_batch_size', %s, false)", (str(size),))


def make_due(conn, project, hours_ago=0.5):
    conn.execute("UPDATE runhub.projects SET digest_next_at = now() - make_interval(secs => %s) WHERE id = %s",
                 (hours_ago * 3600, project))


# -- settings -------------------------------------------------------------------------------------

def test_turning_digests_on_needs_a_recipient_and_schedules_the_next_one(conn):
    project, owner = new_project(conn, timezone="Asia/Kolkata")
    with pytest.raises(psycopg.Error) as excinfo:
        settings(conn, project, owner, {"dailyDigestEnabled": True})
    assert_refused(excinfo, "PT422", "projects.digestRecipientRequired")
    got = settings(conn, project, owner, DIGEST_ON)
    assert (got["dailyDigestEnabled"], got["dailyDigestHour"], got["dailyDigestRecipient"]) == (True, 9, "owner@shop.example")
    expected = conn.execute("SELECT runhub.next_digest_at('Asia/Kolkata', 9, now())").fetchone()[0]
    assert next_at(conn, project) == expected
    assert expected.astimezone(ZoneInfo("Asia/Kolkata")).time() == dt.time(9, 0)
    got = settings(conn, project, owner, {"dailyDigestEnabled": False})
    assert got["dailyDigestNextAt"] is None and next_at(conn, project) is None


def test_a_timezone_change_moves_the_next_digest(conn):
    project, owner = new_project(conn, timezone="Europe/Paris")
    settings(conn, project, owner, DIGEST_ON)
    settings(conn, project, owner, {"timezone": "America/New_York"})
    moved = next_at(conn, project)
    assert moved == conn.execute("SELECT runhub.next_digest_at('America/New_York', 9, now())").fetchone()[0]
    assert moved.astimezone(ZoneInfo("America/New_York")).time() == dt.time(9, 0)
    settings(conn, project, owner, {"frequencyCapHours": 4})  # other settings leave it alone
    assert next_at(conn, project) == moved


@pytest.mark.parametrize(("values", "field"), [
    ({"timezone": "Mars/Olympus"}, None), ({"timezone": None}, None), ({"dailyDigestHour": 24}, "dailyDigestHour"),
    ({"dailyDigestHour": "9"}, "dailyDigestHour"), ({"dailyDigestHour": 9.5}, "dailyDigestHour"),
    ({"dailyDigestEnabled": "yes"}, "dailyDigestEnabled"), ({"dailyDigestRecipient": "<a@b.c>"}, "dailyDigestRecipient"),
])
def test_bad_digest_settings_are_refused_and_change_nothing(conn, values, field):
    project, owner = new_project(conn)
    before = conn.execute("SELECT p FROM runhub.projects p WHERE id = %s", (project,)).fetchone()[0]
    with pytest.raises(psycopg.Error) as excinfo:
        settings(conn, project, owner, values)
    if field:
        assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == field
    else:
        assert_refused(excinfo, "PT400", "projects.invalidTimezone")
    assert conn.execute("SELECT p FROM runhub.projects p WHERE id = %s", (project,)).fetchone()[0] == before


# -- what a digest says -------------------------------------------------------------------------------

def test_kpis_deltas_and_headline_of_a_local_day(conn):
    tz = "America/New_York"
    project, _ = new_project(conn, timezone=tz, currency="USD")
    for at, kind, extra in [
        ("2026-11-28T12:00", "checkout_started", {}), ("2026-11-28T12:30", "payment_succeeded", {"amountCents": 1000, "currency": "USD"}),
        ("2026-11-28T13:00", "checkout_started", {}), ("2026-11-28T14:00", "lead_created", {}),
        ("2026-11-29T09:00", "checkout_started", {}), ("2026-11-29T09:10", "checkout_started", {}),
        ("2026-11-29T09:20", "checkout_started", {}), ("2026-11-29T09:30", "checkout_started", {}),
        ("2026-11-29T10:00", "payment_succeeded", {"amountCents": 2500, "currency": "USD"}),
        ("2026-11-29T10:05", "payment_succeeded", {"amountCents": 9900, "currency": "EUR"}),
        ("2026-11-29T23:59", "lead_created", {}), ("2026-11-30T00:00", "lead_created", {}),  # the next day
    ]:
        event_at(conn, project, kind, local(at[:10], at[11:], tz), **extra)
    d = digest(conn, project, "2026-11-29")
    assert d["kpis"]["revenue"] == {"value": 2500, "previous": 1000, "delta": 1500, "deltaPercent": 150,
                                    "otherCurrencyPayments": 1}
    assert d["kpis"]["leads"] == {"value": 1, "previous": 1, "delta": 0, "deltaPercent": 0}
    assert d["kpis"]["conversion"] == {"value": 0.5, "previous": 0.5, "delta": 0, "deltaPercent": 0, "deltaPoints": 0}
    assert d["headline"] == {"metric": "revenue", "delta": 1500, "deltaPercent": 150, "key": "digest.headline.revenueUp",
                             "params": {"percent": 150}}
    assert (d["date"], d["timezone"], d["currency"], d["kpiOrder"]) == ("2026-11-29", tz, "USD", ["revenue", "leads", "conversion"])
    assert digest(conn, project, "2026-11-27") is None  # a day without activity


@pytest.mark.parametrize(("tz", "day", "hours"), [("Europe/Berlin", "2026-03-29", 23), ("Europe/Berlin", "2026-10-25", 25),
                                                 ("America/New_York", "2026-03-08", 23), ("America/New_York", "2026-11-01", 25)])
def test_yesterday_on_dst_change_days(conn, tz, day, hours):
    """On a 23- or 25-hour day, an event at 23:30 local belongs to that day, one at 00:30 to the next."""
    project, _ = new_project(conn, timezone=tz)
    nxt = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    event_at(conn, project, "lead_created", local(day, "00:30", tz))
    event_at(conn, project, "lead_created", local(day, "23:30", tz))
    event_at(conn, project, "lead_created", local(nxt, "00:30", tz))
    span = conn.execute("SELECT upper(r) - lower(r) FROM runhub.local_day_range(%s::date, %s) r", (day, tz)).fetchone()[0]
    assert span == dt.timedelta(hours=hours)
    assert digest(conn, project, day)["kpis"]["leads"]["value"] == 2
    assert digest(conn, project, nxt)["kpis"]["leads"]["value"] == 1


def test_an_anomaly_against_the_same_weekday_and_payment_failures(conn):
    project, _ = new_project(conn, timezone="UTC")
    for _ in range(4):
        event_at(conn, project, "lead_created", "2026-11-22T10:00:00Z")  # a week before: 4 leads
    event_at(conn, project, "lead_created", "2026-11-29T10:00:00Z")      # 1 lead: down 75 % — medium (high is beyond)
    d = digest(conn, project, "2026-11-29")
    assert d["anomaly"] == {"type": "leads_drop", "key": "digest.anomaly.leadsDrop",
                            "params": {"percent": 75, "weekday": 7}, "severity": "medium"}
    for _ in range(3):
        event_at(conn, project, "payment_failed", "2026-11-29T11:00:00Z")
    event_at(conn, project, "payment_succeeded", "2026-11-29T11:00:00Z", amountCents=100, currency="EUR")
    d = digest(conn, project, "2026-11-29")  # 3 of 4 attempts failed: 75 %, high
    assert d["anomaly"] == {"type": "payment_failures", "key": "digest.anomaly.paymentFailures",
                            "params": {"failed": 3, "attempts": 4, "percent": 75}, "severity": "high"}


def test_the_recommended_action_and_the_proof_point(conn):
    project, owner, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)}, hours_ago=30)
    pay(conn, project, "ann@shop.example", cart="cart-1", hours_ago=29)
    conn.execute("UPDATE runhub.workflow_runs SET requested_at = now() - interval '31 hours' WHERE id = %s", (run,))
    for email in ("bo@shop.example", "cy@shop.example"):
        ingest(conn, project, {"type": "checkout_started", "occurredAt": dt.datetime.now(dt.timezone.utc).isoformat(),
                               "idempotencyKey": uuid.uuid4().hex, "customer": {"email": email},
                               "amountCents": 500, "currency": "EUR", "correlationId": f"c-{email}"})
    today = conn.execute("SELECT (now() AT TIME ZONE 'Europe/Paris')::date").fetchone()[0]
    d = digest(conn, project, today)
    assert d["recommendedAction"] == {"id": "recover_abandoned", "key": "digest.recommend.recoverAbandoned",
                                      "params": {"count": 2}}
    last = d["lastOutcome"]
    assert (last["runId"], last["actionId"], last["outcome"]["conversions"]) == (str(run), "recover_abandoned", 1)


def test_the_recommendation_prefers_people_waiting_to_a_promotion(conn):
    """Recovery first (money now), then onboarding (people waiting), then a promotion: with every
    abandoned checkout converted, the new sign-up is recommended although a promotion reaches more."""
    project, owner = ready_shop(conn)
    cart = checkout(conn, project, "ann@shop.example", hours=2)
    ingest(conn, project, {"type": "payment_succeeded", "occurredAt": ago(1), "idempotencyKey": uuid.uuid4().hex,
                           "customer": {"email": "ann@shop.example"}, "amountCents": 4200, "currency": "EUR",
                           "correlationId": cart})
    signup(conn, project, "new@shop.example", hours=1)
    for email in ("bo@shop.example", "cy@shop.example"):
        ingest(conn, project, {"type": "lead_created", "occurredAt": ago(1), "idempotencyKey": uuid.uuid4().hex,
                               "customer": {"email": email}})
    # The local day of the leads (an hour ago: the day before between midnight and 01:00 in Paris).
    day = conn.execute("""SELECT (max(occurred_at) AT TIME ZONE 'Europe/Paris')::date FROM runhub.business_events
                           WHERE project_id = %s AND event_type = 'lead_created'""", (project,)).fetchone()[0]
    assert digest(conn, project, day)["recommendedAction"] == {
        "id": "onboard_users", "key": "digest.recommend.onboardUsers", "params": {"count": 1}}


# -- the job ----------------------------------------------------------------------------------------

def digest_project(conn, tz="UTC", activity=True, locale="en"):
    project, owner = new_project(conn, timezone=tz, locale=locale)
    settings(conn, project, owner, DIGEST_ON)
    if activity:
        event_at(conn, project, "lead_created", (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat())
    make_due(conn, project)
    return project


def yesterday(conn, tz="UTC"):
    return conn.execute("SELECT (now() AT TIME ZONE %s)::date - 1", (tz,)).fetchone()[0]


def test_the_job_queues_a_digest_skips_a_quiet_day_and_advances_both(conn, db_url):
    busy, quiet = digest_project(conn), digest_project(conn, activity=False)
    assert run_job(db_url) == 1
    rows = dict(conn.execute("SELECT project_id, status FROM runhub.digests").fetchall())
    assert rows == {busy: "queued", quiet: "skipped"}
    for project in (busy, quiet):
        assert next_at(conn, project) > conn.execute("SELECT now()").fetchone()[0]
    mail = conn.execute("SELECT template, to_email, locale, message_id FROM runhub.outbox WHERE project_id = %s",
                        (busy,)).fetchall()
    assert mail == [("digest", "owner@shop.example", "en", f"<digest.{busy}.{yesterday(conn)}@runhub>")]
    counts = conn.execute("SELECT counts FROM runhub.job_runs WHERE job = 'digests' ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert (counts["served"], counts["queued"], counts["skipped"]) == (2, 1, 1)


def test_a_digest_days_overdue_is_sent_once_for_yesterday(conn, db_url):
    project = digest_project(conn)
    make_due(conn, project, hours_ago=24 * 5)
    run_job(db_url)
    assert conn.execute("SELECT day FROM runhub.digests WHERE project_id = %s", (project,)).fetchall() == [(yesterday(conn),)]
    assert run_job(db_url) == 0  # not due again until tomorrow's hour
    assert conn.execute("SELECT count(*) FROM runhub.digests").fetchone()[0] == 1


def test_a_day_is_never_sent_twice_even_when_the_schedule_says_due_again(conn, db_url):
    """A timezone change can make the same local day due twice: the (project, day) key holds."""
    project = digest_project(conn)
    run_job(db_url)
    make_due(conn, project)
    run_job(db_url)
    assert conn.execute("SELECT count(*) FROM runhub.digests WHERE project_id = %s", (project,)).fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM runhub.outbox WHERE project_id = %s", (project,)).fetchone()[0] <= 1


def test_a_failing_digest_is_logged_skipped_and_advanced_not_looped(conn, db_url):
    """One project's failure takes down the batch's set-based statements; served one by one, only it
    fails and the others of its batch are sent."""
    before, project, after = digest_project(conn), digest_project(conn), digest_project(conn)
    conn.execute("UPDATE runhub.projects SET digest_recipient = NULL WHERE id = %s", (project,))  # the outbox refuses it
    assert run_job(db_url) == 2
    status, reason = conn.execute("SELECT status, reason FROM runhub.digests WHERE project_id = %s", (project,)).fetchone()
    assert status == "failed" and "to_email" in reason
    statuses = dict(conn.execute("SELECT project_id, status FROM runhub.digests").fetchall())
    assert (statuses[before], statuses[after]) == ("queued", "queued")
    for p in (before, project, after):
        assert next_at(conn, p) > conn.execute("SELECT now()").fetchone()[0]
    counts = conn.execute("SELECT counts FROM runhub.job_runs WHERE job = 'digests' ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert (counts["served"], counts["queued"], counts["failed"]) == (3, 2, 1)


def test_the_batch_size_setting_is_honoured_and_a_bad_one_ignored(conn, db_url):
    for _ in range(5):
        digest_project(conn, activity=False)
    run_job(db_url, batch_size=2)
    assert conn.execute("SELECT count(*) FROM runhub.digests").fetchone()[0] == 5
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("SELECT set_config('runhub.digest_batch_size', 'lots', false)")
        c.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (*new_project(conn), Jsonb(DIGEST_ON)))
        conn.execute("UPDATE runhub.projects SET digest_next_at = now() - interval '1 minute' WHERE digest_enabled")
        conn.execute("DELETE FROM runhub.digests")
        c.execute("CALL runhub.run_due_digests(NULL)")
    assert conn.execute("SELECT count(*) FROM runhub.digests").fetchone()[0] == 6


def test_ten_thousand_due_projects_would_be_served_in_one_run_batch_by_batch(conn, db_url):
    """450 due projects (more than two batches of 200) all served by one call, each batch committed."""
    projects = [digest_project(conn, activity=False) for _ in range(450)]
    run_job(db_url, batch_size=200)
    assert conn.execute("SELECT count(*) FROM runhub.projects WHERE digest_next_at <= now()").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM runhub.digests WHERE project_id = ANY (%s)", (projects,)).fetchone()[0] == 450
    counts = conn.execute("SELECT counts FROM runhub.job_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert counts["served"] == 450


def test_a_job_killed_halfway_and_rerun_misses_no_day_and_sends_none_twice(conn, db_url):
    """The job is killed while its third batch waits (another session holds the digest row its 421st
    project needs); the two batches it committed stay done, the rerun serves the rest, each day once."""
    projects = [digest_project(conn, activity=False) for _ in range(450)]
    for n, project in enumerate(projects):  # a fixed order: most overdue first
        conn.execute("UPDATE runhub.projects SET digest_next_at = now() - make_interval(mins => %s) WHERE id = %s",
                     (1000 - n, project))
    blocker = connect(db_url, autocommit=False)
    blocker.execute("INSERT INTO runhub.digests (project_id, day, status, reason) VALUES (%s, %s, 'skipped', 'held')",
                    (projects[420], yesterday(conn)))
    job = connect(db_url)
    small_batches(job, 200)
    job_pid = job.info.backend_pid
    thread = threading.Thread(target=lambda: _swallow(lambda: job.execute("CALL runhub.run_due_digests(NULL)")))
    thread.start()
    wait_until(lambda: job_pid in blocked_by(conn, blocker.info.backend_pid), "the job to wait on the held row")
    conn.execute("SELECT pg_terminate_backend(%s)", (job_pid,))
    thread.join(timeout=30)
    blocker.rollback()
    blocker.close()
    served = conn.execute("SELECT count(*) FROM runhub.digests").fetchone()[0]
    assert served == 400, "two batches committed before the kill, the third rolled back"
    run_job(db_url, batch_size=200)
    days = conn.execute("SELECT project_id, count(*) FROM runhub.digests GROUP BY project_id").fetchall()
    assert len(days) == 450 and all(n == 1 for _, n in days)


def _swallow(fn):
    try:
        fn()
    except psycopg.Error as exc:
        print("job ended:", exc)


def test_two_jobs_at_once_serve_each_project_once(conn, db_url):
    for _ in range(60):
        digest_project(conn)
    start = threading.Barrier(2)
    results = []

    def one_job():
        with psycopg.connect(db_url, autocommit=True) as c:
            start.wait()
            results.append(c.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0])

    threads = [threading.Thread(target=one_job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rows = conn.execute("SELECT project_id, count(*) FROM runhub.digests GROUP BY project_id").fetchall()
    assert len(rows) == 60 and all(n == 1 for _, n in rows)
    queued = conn.execute("SELECT count(*) FROM runhub.outbox WHERE template = 'digest'").fetchone()[0]
    assert sum(results) == queued == conn.execute("SELECT count(*) FROM runhub.digests WHERE status = 'queued'").fetchone()[0]


def test_a_timezone_change_between_two_digests(conn, db_url):
    project = digest_project(conn, tz="Europe/Paris")
    run_job(db_url)
    first = conn.execute("SELECT day FROM runhub.digests WHERE project_id = %s", (project,)).fetchone()[0]
    owner = conn.execute("SELECT owner_id FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0]
    settings(conn, project, owner, {"timezone": "Pacific/Auckland"})
    assert next_at(conn, project).astimezone(ZoneInfo("Pacific/Auckland")).time() == dt.time(9, 0)
    make_due(conn, project)
    run_job(db_url)
    days = [r[0] for r in conn.execute("SELECT day FROM runhub.digests WHERE project_id = %s ORDER BY day", (project,))]
    assert days[0] == first and len(days) == len(set(days)) and days[-1] == yesterday(conn, "Pacific/Auckland")
