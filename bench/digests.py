"""Digest benchmark: run_due_digests over 10,000 due projects against the bare KPI aggregate queries.

    .venv/bin/python bench/digests.py              # embedded cluster in .runhub-bench, database runhub_bench_digests
    .venv/bin/python bench/digests.py --rounds 5
    .venv/bin/python bench/digests.py --rebuild    # reload the data set
    .venv/bin/python bench/digests.py --profile    # also print where a digest's time goes, per function

Data (loaded once, in the server, with set-based INSERT ... SELECT as the superuser, and kept):
10,000 projects with daily digests on (digest_enabled, an hour, a recipient: set directly), over 26
time zones (DST ones, half-hour and quarter-hour ones, +14 and -11), their currencies, the five
locales and a dozen industries; most with the payments and e-mail integrations and a shop URL. Each
has a month of events (300-360, about 3.3 million in all): checkouts, payments for them in the
project's currency (a few in another), payment failures (a tenth of the projects fail often),
leads and sign-ups, from 60-150 customers (runhub.customers kept by the events' own trigger); a
third have a recovery run three days old with its sent mail and a few credited payments, a tenth a
promotion sent half an hour before the load (its cooldown, its frequency cap); and a month of
digests already sent (runhub.digests rows and their mail in the outbox, 290,000), as a running
system has them. The events are moved to the present (their times shifted) when more than 12 hours
old, and the digest history follows the calendar, so "yesterday" and the recent windows hold
whenever the bench runs.

Each round makes all 10,000 projects due (digest_next_at = now() minus 1-180 minutes), deletes the
digests of their recent days and the digest mail queued for them (so each round does all the work
again), then, side by side in one session, in alternating order:
  - digests: CALL runhub.run_due_digests(NULL), one call from Python; afterwards none of the due
    times the round set is left, the run's job_runs row served all 10,000 (none failed; a project
    whose local hour comes round during the run is served again, as 'done') and 10,000 digests
    rows exist for the round;
  - baseline: the bare KPI aggregate queries for the same projects and days: per project (a
    PL/pgSQL loop over the same projects rows), its local yesterday, the day before and the same
    weekday a week before as ranges from runhub.local_day_range, and for each range the SELECT ...
    FILTER aggregates of runhub._digest_day over runhub.business_events; checked against the
    digests' revenue and skipped days. For information also the aggregates alone, over ranges
    computed beforehand.
Prints digests/s, ms per digest, baseline ms per project and the ratio per round, and the median
ratio with its spread (target <= 3). With --profile, or when the target is missed: one batch of
digests (runhub.digest_batch) in a transaction that is rolled back, with track_functions = all,
and the time per function from pg_stat_xact_user_functions.

Exits 1 when a target is missed (the ratio, or a run that did not serve all 10,000). Wall-clock on a
shared machine: the load average is printed at the start, per round and at the end. With
--database-url, use a scratch database (the bench needs a superuser and shifts its data in time).
"""
from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runhub_loader.db.deploy import deploy  # noqa: E402
from benchlib import database_url, kept_data_set, loadavg, parser as bench_parser, record, record_loaded_mail_sent, vacuum_analyze  # noqa: E402

DATABASE = "runhub_bench_digests"
DATA_VERSION = 1
PROJECTS = 10_000
MIN_EVENTS = 3_000_000
RATIO_TARGET = 3.0
STALE_AFTER = dt.timedelta(hours=12)
ATTRIBUTION_TRIGGER = "business_events_attribute_payment"
APPEND_ONLY = {"runhub.business_events": "business_events_append_only",
               "runhub.workflow_attributions": "workflow_attributions_append_only"}

# (zone, currency, the locale most of its shops use): DST zones both sides of the equator,
# half-hour and quarter-hour offsets (Kolkata, Kathmandu, Tehran, St John's, Adelaide, Lord Howe with
# its half-hour DST, Chatham), Casablanca's Ramadan clock, Santiago's midnight gap, +14 and -11.
ZONES = [
    ("Europe/Paris", "EUR", "fr"), ("Europe/Berlin", "EUR", "de"), ("Europe/Madrid", "EUR", "es"),
    ("Europe/London", "GBP", "en"), ("America/New_York", "USD", "en"), ("America/Chicago", "USD", "en"),
    ("America/Los_Angeles", "USD", "en"), ("America/St_Johns", "CAD", "en"), ("America/Sao_Paulo", "BRL", "es"),
    ("America/Mexico_City", "MXN", "es"), ("America/Santiago", "CLP", "es"), ("Asia/Kolkata", "INR", "en"),
    ("Asia/Kathmandu", "NPR", "en"), ("Asia/Tehran", "IRR", "ar"), ("Asia/Dubai", "AED", "ar"),
    ("Africa/Cairo", "EGP", "ar"), ("Asia/Riyadh", "SAR", "ar"), ("Asia/Tokyo", "JPY", "en"),
    ("Australia/Adelaide", "AUD", "en"), ("Australia/Lord_Howe", "AUD", "en"), ("Pacific/Chatham", "NZD", "en"),
    ("Pacific/Auckland", "NZD", "en"), ("UTC", "USD", "en"), ("Africa/Casablanca", "MAD", "fr"),
    ("Pacific/Kiritimati", "AUD", "en"), ("Pacific/Pago_Pago", "USD", "en"),
]
LOCALES = ["en", "fr", "de", "es", "ar"]
INDUSTRIES = ["retail", "coffee", "services", "saas", "agency", "education", "health", "fashion", "food-truck",
              "consulting", "ecommerce", None]


# -- the data set ----------------------------------------------------------------------------------

def load(conn, projects: int) -> None:
    """Projects, a month of events each, and some workflow mail, generated in the server (a few minutes, once)."""
    t0 = time.monotonic()
    print(f"loading {projects:,} projects with a month of events each ...", flush=True)
    # History needs no attribution: the row trigger would look up sent mail for every payment.
    conn.execute(f"ALTER TABLE runhub.business_events DISABLE TRIGGER {ATTRIBUTION_TRIGGER}")
    conn.execute("""
        SELECT runhub.create_project('Digest shop ' || g, gen_random_uuid(), z.zone, z.currency,
                                     CASE WHEN g %% 4 = 0 THEN (%(locales)s::text[])[1 + (g / 4) %% 5] ELSE z.locale END,
                                     (%(industries)s::text[])[1 + g %% %(ni)s])
          FROM generate_series(1, %(n)s) g,
               LATERAL (SELECT (%(zones)s::text[])[1 + g %% %(nz)s] AS zone, (%(currencies)s::text[])[1 + g %% %(nz)s] AS currency,
                               (%(zlocales)s::text[])[1 + g %% %(nz)s] AS locale) z""",
                 {"n": projects, "zones": [z for z, _, _ in ZONES], "currencies": [c for _, c, _ in ZONES],
                  "zlocales": [loc for _, _, loc in ZONES], "nz": len(ZONES), "locales": LOCALES,
                  "industries": INDUSTRIES, "ni": len(INDUSTRIES)})
    conn.execute("""CREATE TABLE public.bench_digest_shops (
                        n int PRIMARY KEY, project_id uuid NOT NULL UNIQUE, owner_id uuid NOT NULL,
                        currency char(3) NOT NULL, other_currency char(3) NOT NULL,
                        customers int NOT NULL, events int NOT NULL, fail_heavy boolean NOT NULL)""")
    conn.execute("""
        INSERT INTO public.bench_digest_shops
        SELECT n, id, owner_id, currency, CASE WHEN currency = 'EUR' THEN 'USD' ELSE 'EUR' END,
               60 + n % 91, 300 + n % 61, n % 10 = 7
          FROM (SELECT id, owner_id, currency, split_part(name, ' ', 3)::int AS n
                  FROM runhub.projects WHERE name LIKE 'Digest shop %') p""")
    # Digests on, at every hour of the day; integrations as a shop has them (most: payments and
    # e-mail; some e-mail only; a few nothing yet).
    conn.execute("""
        UPDATE runhub.projects p
           SET settings = p.settings || CASE WHEN s.n % 20 < 17
                                             THEN jsonb_build_object('shopUrl', 'https://s' || s.n || '.example',
                                                                     'integrations', jsonb_build_array('payments', 'email'))
                                             WHEN s.n % 20 < 19 THEN '{"integrations": ["email"]}'::jsonb
                                             ELSE '{}'::jsonb END,
               digest_enabled = true, digest_hour = s.n % 24,
               digest_recipient = 'owner' || s.n || '@s' || s.n || '.example',
               digest_next_at = runhub.next_digest_at(p.timezone, s.n % 24, now())
          FROM public.bench_digest_shops s
         WHERE s.project_id = p.id""")
    conn.commit()
    print(f"  projects ({time.monotonic() - t0:.0f} s)", flush=True)

    # A month of events per project, g = 1..events, kind by g % 20: 0-5 checkouts (a cart each);
    # 6-9 payments of the checkout g - 6 (15 minutes after it; g % 40 = 9 in another currency);
    # 10 a failed payment of checkout g - 6 (5 minutes after it), 11 too where the shop fails
    # often, else a lead; 12-15 leads; 16-19 sign-ups (each a new person). Times and customers come
    # from a hash of (project, g), so that a payment and its checkout agree.
    batches = 10
    anchor = conn.execute("SELECT now()").fetchone()[0]
    for batch in range(batches):
        lo, hi = batch * projects // batches + 1, (batch + 1) * projects // batches
        conn.execute("""
            INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                                customer_email, customer_name, amount_cents, currency, payload)
            SELECT s.project_id, k.kind,
                   least(%(anchor)s::timestamptz, %(anchor)s::timestamptz - h.at * interval '30 days' + k.later),
                   'ev-' || g, CASE WHEN k.money THEN 'cart-' || k.base END,
                   CASE WHEN k.kind = 'user_signed_up' THEN 'u' || g
                        WHEN k.kind = 'lead_created' THEN 'l' || floor(h.who * s.customers)
                        ELSE 'c' || floor(h.who * s.customers) END || '@s' || s.n || '.example',
                   CASE WHEN k.kind = 'user_signed_up' THEN 'User ' || g
                        ELSE 'Customer ' || floor(h.who * s.customers) END,
                   CASE WHEN k.money THEN 1500 + floor(h.amount * 20000)::bigint END,
                   CASE WHEN NOT k.money THEN NULL WHEN k.kind = 'payment_succeeded' AND g %% 40 = 9
                        THEN s.other_currency ELSE s.currency END,
                   CASE WHEN k.money THEN jsonb_build_object('cartId', 'cart-' || k.base) ELSE '{}' END
              FROM public.bench_digest_shops s,
                   generate_series(1, s.events) g,
                   LATERAL (SELECT b, CASE WHEN b BETWEEN 6 AND 11 THEN g - 6 ELSE g END AS base,
                                   CASE WHEN b < 6 THEN 'checkout_started'
                                        WHEN b < 10 THEN 'payment_succeeded'
                                        WHEN b = 10 OR (b = 11 AND s.fail_heavy) THEN 'payment_failed'
                                        WHEN b < 16 THEN 'lead_created'
                                        ELSE 'user_signed_up' END AS kind
                              FROM (SELECT g %% 20 AS b) b0) k0,
                   LATERAL (SELECT k0.kind, k0.base, k0.kind IN ('checkout_started', 'payment_succeeded', 'payment_failed') AS money,
                                   CASE WHEN k0.kind = 'payment_succeeded' THEN interval '15 minutes'
                                        WHEN k0.kind = 'payment_failed' THEN interval '5 minutes'
                                        ELSE interval '0' END AS later) k,
                   LATERAL (SELECT (hashint8(s.n::bigint * 1000003 + k.base)::bigint + 2147483648) / 4294967296.0 AS at,
                                   (hashint8(s.n::bigint * 1000003 + k.base + 500000)::bigint + 2147483648) / 4294967296.0 AS who,
                                   (hashint8(s.n::bigint * 7919 + k.base)::bigint + 2147483648) / 4294967296.0 AS amount) h
             WHERE s.n BETWEEN %(lo)s AND %(hi)s""", {"anchor": anchor, "lo": lo, "hi": hi})
        conn.execute("SELECT count(runhub.rebuild_customers(s.project_id)) FROM public.bench_digest_shops s"
                     " WHERE s.n BETWEEN %(lo)s AND %(hi)s", {"lo": lo, "hi": hi})  # loaded past ingest
        conn.commit()
        print(f"  events {batch + 1}/{batches} ({time.monotonic() - t0:.0f} s)", flush=True)

    # Workflow mail: a third of the shops sent a recovery three days ago (5 mails, up to 3 payments
    # credited to it); a tenth a promotion half an hour ago (5 mails): a run in cooldown, mail within
    # the frequency cap. As execute_run and the sender leave them.
    for kind, action, cond, ago in (("old", "recover_abandoned", "s.n %% 3 = 0", "3 days"),
                                    ("new", "send_promo", "s.n %% 10 = 1", "30 minutes")):
        conn.execute(f"""
            INSERT INTO runhub.workflow_runs (project_id, action_id, status, requested_at, started_at, executed_at,
                                              completed_at, idempotency_key, params, result, triggered_by,
                                              triggered_by_role, created_at, outcome_window_hours, last_sent_at,
                                              recipient_count_estimate, attempts)
            SELECT s.project_id, %(action)s, 'succeeded', t.at - interval '2 minutes', t.at - interval '1 minute',
                   t.at, t.at + interval '10 seconds', 'bench-digest-{kind}', %(params)s,
                   '{{"totalRecipients": 5, "successful": 5, "failed": 0, "cancelled": 0}}',
                   s.owner_id, 'owner', t.at - interval '2 minutes', 48, t.at + interval '5 seconds', 5, 1
              FROM public.bench_digest_shops s,
                   LATERAL (SELECT %(anchor)s::timestamptz - interval '{ago}' AS at) t
             WHERE {cond}""",
                     {"action": action, "anchor": anchor,
                      "params": Jsonb({} if action == "recover_abandoned" else
                                      {"subject": "Sale", "content": "-20%", "segmentation": "recent_30d",
                                       "isUpdate": False})})
    conn.execute("""
        INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, name, locale, cart_id, amount_cents,
                                                    currency, link, status, created_at, updated_at)
        SELECT r.id, r.project_id, 'c' || k || '@s' || s.n || '.example', 'Customer ' || k, NULL,
               CASE WHEN r.action_id = 'recover_abandoned' THEN 'cart-' || k END,
               CASE WHEN r.action_id = 'recover_abandoned' THEN 2000 + k END,
               CASE WHEN r.action_id = 'recover_abandoned' THEN s.currency END,
               'https://s' || s.n || '.example/?wid=' || r.id, 'sent', r.executed_at, r.executed_at + k * interval '1 second'
          FROM runhub.workflow_runs r
          JOIN public.bench_digest_shops s ON s.project_id = r.project_id,
               generate_series(1, 5) k
         WHERE r.idempotency_key LIKE 'bench-digest-%'""")
    record_loaded_mail_sent(conn, "bench-digest-%")
    conn.execute("""
        INSERT INTO runhub.workflow_attributions (project_id, run_id, payment_event_id, message_id, method, confidence,
                                                  window_hours, sent_at, paid_at, amount_cents, currency)
        SELECT x.project_id, x.run_id, x.event_id, x.message_id, 'amount_match', 'low', 48, x.sent_at, x.occurred_at,
               x.amount_cents, x.currency
          FROM (SELECT r.project_id, r.id AS run_id, e.id AS event_id, e.occurred_at, e.amount_cents, e.currency,
                       r.last_sent_at AS sent_at,
                       (SELECT min(o.id) FROM runhub.outbox o WHERE o.run_id = r.id) AS message_id,
                       row_number() OVER (PARTITION BY r.id ORDER BY e.occurred_at) AS k
                  FROM runhub.workflow_runs r
                  JOIN public.bench_digest_shops s ON s.project_id = r.project_id
                  JOIN runhub.business_events e
                    ON e.project_id = r.project_id AND e.event_type = 'payment_succeeded' AND e.currency = s.currency
                   AND e.occurred_at >= r.last_sent_at AND e.occurred_at < r.last_sent_at + interval '48 hours'
                 WHERE r.idempotency_key = 'bench-digest-old') x
         WHERE x.k <= 3""")
    # Last: its presence says the data set is complete.
    conn.execute("""CREATE TABLE public.bench_digest_meta (
                        version int NOT NULL, projects int NOT NULL, loaded_at timestamptz NOT NULL,
                        anchor timestamptz NOT NULL)""")
    conn.execute("INSERT INTO public.bench_digest_meta VALUES (%s, %s, now(), %s)", (DATA_VERSION, projects, anchor))
    conn.execute(f"ALTER TABLE runhub.business_events ENABLE TRIGGER {ATTRIBUTION_TRIGGER}")
    conn.commit()
    print(f"  workflow mail ({time.monotonic() - t0:.0f} s)", flush=True)
    vacuum_analyze(conn, LOADED_TABLES)
    print(f"loaded in {time.monotonic() - t0:.0f} s", flush=True)


LOADED_TABLES = ("runhub.business_events", "runhub.customers", "runhub.projects",
                 "runhub.workflow_runs", "runhub.workflow_run_recipients", "runhub.outbox",
                 "runhub.workflow_attributions", "runhub.digests")  # what the load writes: vacuumed after it


def to_present(conn) -> None:
    """Shift the data set by the time since it was loaded (or last shifted), once that is more than
    12 hours: the month of events then ends now again, "yesterday" is inside it and the recent
    windows (a day of checkouts, a week of customers, the cooldown) hold as at load time. The
    append-only guards are lifted for the update only, in its transaction."""
    shift = conn.execute("SELECT now() - anchor FROM public.bench_digest_meta").fetchone()[0]
    if shift < STALE_AFTER:
        return
    t0 = time.monotonic()
    print(f"moving the data set {shift} forward, to the present ...", flush=True)
    params = {"d": shift}
    for table, trigger in APPEND_ONLY.items():
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
    conn.execute("UPDATE runhub.business_events SET occurred_at = occurred_at + %(d)s, received_at = received_at + %(d)s",
                 params)
    conn.execute("""UPDATE runhub.customers
                       SET first_seen_at = first_seen_at + %(d)s, last_seen_at = last_seen_at + %(d)s,
                           signed_up_at = signed_up_at + %(d)s, last_engaged_at = last_engaged_at + %(d)s,
                           last_paid_at = last_paid_at + %(d)s""", params)
    conn.execute("""UPDATE runhub.workflow_runs
                       SET requested_at = requested_at + %(d)s, started_at = started_at + %(d)s,
                           executed_at = executed_at + %(d)s, completed_at = completed_at + %(d)s,
                           last_sent_at = last_sent_at + %(d)s, created_at = created_at + %(d)s""", params)
    conn.execute("UPDATE runhub.workflow_run_recipients SET created_at = created_at + %(d)s, updated_at = updated_at + %(d)s",
                 params)
    conn.execute("""UPDATE runhub.outbox
                       SET sent_at = sent_at + %(d)s, started_at = started_at + %(d)s,
                           next_attempt_at = next_attempt_at + %(d)s, created_at = created_at + %(d)s
                     WHERE run_id IS NOT NULL""", params)
    conn.execute("""UPDATE runhub.workflow_attributions
                       SET sent_at = sent_at + %(d)s, paid_at = paid_at + %(d)s, attributed_at = attributed_at + %(d)s""",
                 params)
    for table, trigger in APPEND_ONLY.items():
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    conn.execute("UPDATE public.bench_digest_meta SET anchor = anchor + %(d)s", params)
    conn.commit()
    vacuum_analyze(conn, LOADED_TABLES)
    print(f"  moved in {time.monotonic() - t0:.0f} s", flush=True)


def ensure_history(conn) -> None:
    """A month of digests already sent, as the job leaves them: for each project the days from 30
    to 2 days before its local yesterday, a 'sent' digest mail each in the outbox (its variables
    left out) and its runhub.digests row; older ones removed. Done at every start, so that it moves
    with the calendar (the rounds themselves write yesterday, and delete it again)."""
    t0 = time.monotonic()
    gone = conn.execute("""
        WITH old AS (
            DELETE FROM runhub.digests d USING runhub.projects p
             WHERE p.id = d.project_id AND d.day < (now() AT TIME ZONE p.timezone)::date - 31
            RETURNING d.message_id)
        DELETE FROM runhub.outbox o USING old WHERE o.id = old.message_id""").rowcount
    added = conn.execute("""
        WITH want AS (
            SELECT p.id, p.locale, p.digest_recipient, p.timezone, p.digest_hour, d::date AS day
              FROM runhub.projects p,
                   LATERAL (SELECT (now() AT TIME ZONE p.timezone)::date - 1 AS y) t,
                   generate_series(t.y - 30, t.y - 2, interval '1 day') d
             WHERE p.digest_enabled
               AND NOT EXISTS (SELECT 1 FROM runhub.digests x WHERE x.project_id = p.id AND x.day = d::date)),
        sent AS (
            INSERT INTO runhub.outbox (project_id, template, locale, to_email, variables, message_id, status, attempts,
                                       next_attempt_at, started_at, sent_at, smtp_reply, created_at)
            SELECT w.id, 'digest', w.locale, w.digest_recipient, '{}', format('<digest.%s.%s@runhub>', w.id, w.day),
                   'sent', 1, a.at, a.at, a.at + interval '1 second', '250 2.0.0 Ok: queued', a.at
              FROM want w, LATERAL (SELECT ((w.day + 1)::timestamp + make_interval(hours => w.digest_hour))
                                           AT TIME ZONE w.timezone AS at) a
            RETURNING id, project_id, message_id, created_at)
        INSERT INTO runhub.digests (project_id, day, status, message_id, content, created_at)
        SELECT s.project_id, left(split_part(s.message_id, '.', 3), 10)::date, 'queued', s.id, '{}', s.created_at
          FROM sent s""").rowcount
    conn.commit()
    if gone or added:
        vacuum_analyze(conn, ("runhub.digests", "runhub.outbox"))
        print(f"digest history: {added:,} days added, {gone:,} older ones removed ({time.monotonic() - t0:.0f} s)",
              flush=True)


def describe(conn, projects: int) -> None:
    events, with_events = conn.execute(
        "SELECT count(*), count(DISTINCT project_id) FROM runhub.business_events").fetchone()
    on, zones, locales, industries = conn.execute(
        """SELECT count(*), count(DISTINCT timezone), count(DISTINCT locale), count(DISTINCT industry)
             FROM runhub.projects WHERE digest_enabled AND digest_recipient IS NOT NULL""").fetchone()
    customers = conn.execute("SELECT count(*) FROM runhub.customers").fetchone()[0]
    history = conn.execute("SELECT count(*) FROM runhub.digests").fetchone()[0]
    runs, credits = conn.execute("""SELECT (SELECT count(*) FROM runhub.workflow_runs),
                                           (SELECT count(*) FROM runhub.workflow_attributions)""").fetchone()
    kinds = conn.execute("""SELECT event_type, count(*) FROM runhub.business_events
                             GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    print(f"data: {on:,} projects with digests on ({zones} zones, {locales} locales, {industries} industries); "
          f"{events:,} events over {with_events:,} projects ({events / max(with_events, 1):.0f} each), "
          f"{customers:,} customers, {runs:,} workflow runs, {credits:,} credits, {history:,} digests sent before")
    print("  events: " + ", ".join(f"{k} {n:,}" for k, n in kinds))
    if on < projects or events < 300 * projects or (projects >= PROJECTS and events < MIN_EVENTS):
        raise SystemExit("the data set is smaller than the benchmark requires: run with --rebuild")


# -- one round ---------------------------------------------------------------------------------------

# runhub._digest_day's KPI aggregates over one range (v_range) of one project (<p>.id, <p>.currency),
# bare: what both baselines below run.
KPI_AGGREGATES = r"""
            SELECT jsonb_build_object(
                'events', count(*) FILTER (WHERE e.event_type NOT LIKE '%\_email\_sent'),
                'revenueCents', coalesce(sum(e.amount_cents) FILTER (WHERE e.event_type = 'payment_succeeded'
                                                                        AND e.currency = <p>.currency), 0),
                'otherCurrencyPayments', count(*) FILTER (WHERE e.event_type = 'payment_succeeded' AND e.currency <> <p>.currency),
                'payments', count(*) FILTER (WHERE e.event_type = 'payment_succeeded'),
                'checkouts', count(*) FILTER (WHERE e.event_type = 'checkout_started'),
                'leads', count(*) FILTER (WHERE e.event_type = 'lead_created'),
                'paymentFailures', count(*) FILTER (WHERE e.event_type = 'payment_failed'))
              INTO v_facts
              FROM runhub.business_events e
             WHERE e.project_id = <p>.id AND e.occurred_at >= lower(v_range) AND e.occurred_at < upper(v_range);""".strip("\n")

BASELINE = r"""
CREATE OR REPLACE FUNCTION public.bench_digest_kpis()
RETURNS jsonb
LANGUAGE plpgsql
AS $$
-- The bare KPI aggregate queries of the digests: per project that has them on, its local yesterday,
-- the day before and the same weekday a week before, each a range from runhub.local_day_range and
-- runhub._digest_day's SELECT ... FILTER aggregates over it. Returns totals to check against the
-- digests: projects, events and revenue of the days themselves, days without activity.
DECLARE
    v_project runhub.projects;
    v_day     date;
    v_range   tstzrange;
    v_facts   jsonb;
    v_first   boolean;
    v_n       int := 0;
    v_events  bigint := 0;
    v_revenue numeric := 0;
    v_idle    int := 0;
BEGIN
    FOR v_project IN SELECT * FROM runhub.projects WHERE digest_enabled ORDER BY digest_next_at LOOP
        v_day := (now() AT TIME ZONE v_project.timezone)::date - 1;
        v_first := true;
        FOREACH v_range IN ARRAY ARRAY[runhub.local_day_range(v_day, v_project.timezone),
                                       runhub.local_day_range(v_day - 1, v_project.timezone),
                                       runhub.local_day_range(v_day - 7, v_project.timezone)] LOOP
{kpis_of_project}
            IF v_first THEN
                v_events := v_events + (v_facts ->> 'events')::bigint;
                v_revenue := v_revenue + (v_facts ->> 'revenueCents')::numeric;
                v_idle := v_idle + CASE WHEN (v_facts ->> 'events')::bigint = 0 THEN 1 ELSE 0 END;
                v_first := false;
            END IF;
        END LOOP;
        v_n := v_n + 1;
    END LOOP;
    RETURN jsonb_build_object('projects', v_n, 'events', v_events, 'revenue', v_revenue, 'idle', v_idle);
END
$$;

-- For information: the same aggregates alone, over ranges computed beforehand (bench_digest_ranges).
CREATE OR REPLACE FUNCTION public.bench_digest_kpis_only()
RETURNS int
LANGUAGE plpgsql
AS $$
DECLARE
    v_row   record;
    v_range tstzrange;
    v_facts jsonb;
    v_n     int := 0;
BEGIN
    FOR v_row IN SELECT * FROM public.bench_digest_ranges LOOP
        FOREACH v_range IN ARRAY v_row.ranges LOOP
{kpis_of_row}
        END LOOP;
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$$;
""".replace("{kpis_of_project}", KPI_AGGREGATES.replace("<p>", "v_project")).replace(
    "{kpis_of_row}", KPI_AGGREGATES.replace("<p>", "v_row"))


def prepare_round(admin) -> None:
    """All projects due, the digests of their last two days (what a round writes: yesterday, or
    today once a local midnight passed) and the mail queued for them gone; then vacuumed, so that
    every round starts from the same tables (the month of history before stays)."""
    admin.execute("""UPDATE runhub.projects
                        SET digest_next_at = now() - (1 + floor(random() * 180)) * interval '1 minute'
                      WHERE digest_enabled""")
    admin.execute("""DELETE FROM runhub.digests d USING runhub.projects p
                      WHERE p.id = d.project_id AND d.day >= (now() AT TIME ZONE p.timezone)::date - 2""")
    admin.execute("""DELETE FROM runhub.outbox o
                      WHERE o.template = 'digest' AND o.run_id IS NULL
                        AND NOT EXISTS (SELECT 1 FROM runhub.digests d WHERE d.message_id = o.id)""")
    admin.execute("DROP TABLE IF EXISTS public.bench_digest_ranges")
    admin.execute("""CREATE TABLE public.bench_digest_ranges AS
                     SELECT p.id, p.currency,
                            ARRAY[runhub.local_day_range(d.day, p.timezone), runhub.local_day_range(d.day - 1, p.timezone),
                                  runhub.local_day_range(d.day - 7, p.timezone)] AS ranges
                       FROM runhub.projects p, LATERAL (SELECT (now() AT TIME ZONE p.timezone)::date - 1 AS day) d
                      WHERE p.digest_enabled ORDER BY p.digest_next_at""")
    for table in ("runhub.projects", "runhub.digests", "runhub.outbox", "runhub.job_runs"):
        admin.execute(f"VACUUM (ANALYZE) {table}")


def local_days(admin) -> list:
    """Each zone's local yesterday now: what a round's days are, unless a local midnight passes."""
    return admin.execute("""SELECT array_agg(DISTINCT timezone || ' ' || ((now() AT TIME ZONE timezone)::date - 1)
                                            ORDER BY timezone || ' ' || ((now() AT TIME ZONE timezone)::date - 1))
                              FROM runhub.projects WHERE digest_enabled""").fetchone()[0]


def run_digests(worker, admin, projects: int, started: dt.datetime, days: list | None = None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    queued = worker.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0]
    elapsed = time.perf_counter() - t0
    # A project whose local hour comes round while the run is going is due again (made due early by
    # the round, served, and scheduled for that hour): served again, it counts as 'done'. None of the
    # due times the round set may be left.
    left = admin.execute("SELECT count(*) FROM runhub.projects WHERE digest_enabled AND digest_next_at <= %s",
                         (started,)).fetchone()[0]
    rows = dict(admin.execute("""SELECT status, count(*) FROM runhub.digests WHERE created_at >= %s GROUP BY 1""",
                              (started,)).fetchall())
    job = admin.execute("""SELECT counts FROM runhub.job_runs WHERE job = 'digests' AND started_at >= %s
                            ORDER BY id""", (started,)).fetchall()
    revenue = admin.execute("""SELECT coalesce(sum((content #>> '{kpis,revenue,value}')::numeric), 0)
                                 FROM runhub.digests WHERE created_at >= %s AND status = 'queued'""",
                            (started,)).fetchone()[0]
    counts = job[0][0] if len(job) == 1 else {}
    # A local midnight passing during the run makes a project served again for its new yesterday (a
    # second digest, rightly): then each project needs at least one, not exactly one.
    extra = counts.get("queued", 0) + counts.get("skipped", 0) - projects if days and local_days(admin) != days else 0
    problems = []
    if left:
        problems.append(f"{left} projects still due")
    if len(job) != 1:
        problems.append(f"{len(job)} job_runs rows (one run expected)")
    elif counts.get("served", 0) - counts.get("done", 0) - extra != projects or counts.get("failed"):
        problems.append(f"the run's counts are {counts}")
    if sum(rows.values()) - extra != projects or rows.get("failed"):
        problems.append(f"digests rows {rows}")
    if queued != rows.get("queued"):
        problems.append(f"run_due_digests said {queued} queued, the table {rows.get('queued')}")
    if problems:
        raise SystemExit("the digest run did not serve every project once: " + "; ".join(problems))
    return elapsed, {"queued": rows.get("queued", 0), "skipped": rows.get("skipped", 0), "revenue": revenue,
                     "again": counts.get("done", 0)}


def run_baseline(worker, projects: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    totals = worker.execute("SELECT public.bench_digest_kpis()").fetchone()[0]
    elapsed = time.perf_counter() - t0
    if totals["projects"] != projects:
        raise SystemExit(f"the baseline covered {totals['projects']} projects, not {projects}")
    return elapsed, totals


def run_kpis_only(worker, projects: int) -> float:
    t0 = time.perf_counter()
    n = worker.execute("SELECT public.bench_digest_kpis_only()").fetchone()[0]
    elapsed = time.perf_counter() - t0
    assert n == projects, n
    return elapsed


def bench(url: str, admin, projects: int, rounds: int) -> tuple[bool, float]:
    print(f"\n{rounds} rounds: CALL runhub.run_due_digests(NULL) over {projects:,} due projects vs the bare KPI "
          f"aggregate queries (3 local days per project, ranges from local_day_range), side by side in one session, "
          f"alternating which goes first; one untimed warm-up of each before")
    print(f"{'round':>5} {'first':>8} {'digests s':>9} {'digests/s':>9} {'ms/digest':>9} {'kpis s':>7} "
          f"{'ms/project':>10} {'ratio':>6} {'kpis alone':>10} {'load':>5}  digests")
    ratios, rates, digest_ms, base_ms, alone_ms = [], [], [], [], []
    with psycopg.connect(url, autocommit=True) as worker:
        # Untimed: the session's plans, the PL/Python bundle, and the pages both read.
        prepare_round(admin)
        run_digests(worker, admin, projects, admin.execute("SELECT now()").fetchone()[0])
        run_baseline(worker, projects)
        for rnd in range(rounds):
            prepare_round(admin)
            started = admin.execute("SELECT now()").fetchone()[0]
            days = local_days(admin)
            digests_first = rnd % 2 == 0
            result = {}
            for side in (("digests", "baseline") if digests_first else ("baseline", "digests")):
                if side == "digests":
                    result[side] = run_digests(worker, admin, projects, started, days)
                else:
                    result[side] = run_baseline(worker, projects)
            alone = run_kpis_only(worker, projects)
            (d_s, d_info), (b_s, b_info) = result["digests"], result["baseline"]
            # The same days: the digests' revenue is the baseline's, and the days skipped (no
            # activity) are the baseline's idle days (unless a local midnight passed in between).
            same_days = local_days(admin) == days
            if same_days and (d_info["revenue"] != b_info["revenue"] or d_info["skipped"] != b_info["idle"]):
                raise SystemExit(f"the digests and the baseline disagree on the days: revenue {d_info['revenue']} vs "
                                 f"{b_info['revenue']}, skipped {d_info['skipped']} vs idle {b_info['idle']}")
            ratio = d_s / b_s
            ratios.append(ratio)
            rates.append(projects / d_s)
            digest_ms.append(d_s * 1000 / projects)
            base_ms.append(b_s * 1000 / projects)
            alone_ms.append(alone * 1000 / projects)
            again = f", {d_info['again']} served again at their hour (done)" if d_info["again"] else ""
            print(f"{rnd + 1:>5} {'digests' if digests_first else 'baseline':>8} {d_s:>9.1f} {projects / d_s:>9.0f} "
                  f"{d_s * 1000 / projects:>9.2f} {b_s:>7.1f} {b_s * 1000 / projects:>10.3f} {ratio:>6.1f} "
                  f"{alone * 1000 / projects:>10.3f} {os.getloadavg()[0]:>5.2f}  "
                  f"{d_info['queued']:,} queued, {d_info['skipped']:,} skipped"
                  f"{again}"
                  f"{'' if same_days else ' (a local midnight passed: days not compared)'}", flush=True)
    med = statistics.median(ratios)
    ok = med <= RATIO_TARGET
    record("digests", "the digest job, per project", "bare KPI queries", ratios, f"<= {RATIO_TARGET:g}", ok)
    print(f"median: {statistics.median(rates):.0f} digests/s ({statistics.median(digest_ms):.2f} ms per digest, "
          f"spread {min(digest_ms):.2f}-{max(digest_ms):.2f}); bare KPI queries {statistics.median(base_ms):.3f} ms "
          f"per project (spread {min(base_ms):.3f}-{max(base_ms):.3f}; the aggregates alone "
          f"{statistics.median(alone_ms):.3f})")
    print(f"  ratio digest / bare KPI queries: median {med:.1f}, spread {min(ratios):.1f}-{max(ratios):.1f} over "
          f"{rounds} rounds (target <= {RATIO_TARGET:g}): {'ok' if ok else 'OVER'}")
    print(f"  for information, against the aggregates alone: {statistics.median(digest_ms) / statistics.median(alone_ms):.1f}")
    return ok, statistics.median(digest_ms)


# -- where the time goes ------------------------------------------------------------------------------

def profile(url: str, admin, sample: int) -> None:
    """One batch of `sample` digests (runhub.digest_batch, as run_due_digests calls it) in a
    transaction rolled back afterwards, with track_functions = all: calls, total and self time per
    function from pg_stat_xact_user_functions, per digest."""
    prepare_round(admin)
    print(f"\nprofile: one batch of {sample} digests (runhub.digest_batch({sample})) in a transaction rolled back, "
          f"track_functions = all; ms per digest (total includes what a function calls; SQL functions inlined "
          f"into their caller do not appear):")
    stats = """SELECT schemaname || '.' || funcname, calls, total_time, self_time FROM pg_stat_xact_user_functions"""
    with psycopg.connect(url) as conn:
        conn.execute("SET track_functions = 'all'")
        conn.commit()
        conn.execute("SELECT runhub.digest_batch(%s)", (min(50, sample),))  # warm this session: rolled back
        conn.rollback()
        # The view shows this backend's counts not yet reported: take the difference.
        before = {r[0]: r[1:] for r in conn.execute(stats).fetchall()}
        t0 = time.perf_counter()
        counts = conn.execute("SELECT runhub.digest_batch(%s)", (sample,)).fetchone()[0]
        elapsed = time.perf_counter() - t0
        after = conn.execute(stats).fetchall()
        conn.rollback()
    zero = (0, 0.0, 0.0)
    rows = sorted(((name, calls - before.get(name, zero)[0], total - before.get(name, zero)[1],
                    self_ - before.get(name, zero)[2]) for name, calls, total, self_ in after),
                  key=lambda r: -r[3])
    rows = [r for r in rows if r[1] > 0]
    served = counts["served"]
    print(f"  {served} served in {elapsed * 1000:.0f} ms: {elapsed * 1000 / served:.2f} ms per digest")
    print(f"  {'function':36} {'calls/digest':>12} {'total ms':>9} {'self ms':>8} {'self %':>7}")
    whole = sum(r[3] for r in rows) or 1
    for name, calls, total, self_ in rows:
        print(f"  {name:36} {calls / served:>12.2f} {total / served:>9.3f} {self_ / served:>8.3f} "
              f"{self_ * 100 / whole:>6.1f}%")


# -- main ------------------------------------------------------------------------------------------

def main() -> int:
    parser = bench_parser(__doc__, "superuser; the bench shifts its data in time, toggling the append-only guards")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, each side once per round [3]")
    parser.add_argument("--profile", action="store_true",
                        help="print the time per function of a batch of digests (also done when the target is missed)")
    parser.add_argument("--profile-sample", type=int, default=1000, help="digests in the profiled batch [1000]")
    parser.add_argument("--projects", type=int, default=PROJECTS,
                        help=f"projects in the data set [{PROJECTS:,}, the requirement]; another count needs --rebuild")
    args = parser.parse_args()
    if args.rounds < 1 or args.projects < 1 or not 1 <= args.profile_sample <= 10000:
        parser.error("--rounds and --projects must be positive, --profile-sample 1 to 10000")

    print(f"load average at start: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    t_start = time.monotonic()
    url = database_url(args, DATABASE)
    deploy(url, schedule_cron=False)
    with psycopg.connect(url) as admin:
        if not kept_data_set(admin, "public.bench_digest_meta", "public.bench_digest_shops",
                             {"version": DATA_VERSION, "projects": args.projects}):
            load(admin, args.projects)
        for trigger in (ATTRIBUTION_TRIGGER, APPEND_ONLY["runhub.business_events"]):  # after an interrupted run
            admin.execute(f"ALTER TABLE runhub.business_events ENABLE TRIGGER {trigger}")
        admin.execute(f"ALTER TABLE runhub.workflow_attributions ENABLE TRIGGER {APPEND_ONLY['runhub.workflow_attributions']}")
        admin.commit()
        to_present(admin)
        ensure_history(admin)
        describe(admin, args.projects)
        admin.execute(BASELINE)
        admin.commit()
        admin.autocommit = True
        t_measure = time.monotonic()
        ok, _ = bench(url, admin, args.projects, args.rounds)
        if args.profile or not ok:
            profile(url, admin, min(args.profile_sample, args.projects))
        prepare_round(admin)  # leave nothing due: a sender pointed here would mail 10,000 owners
        admin.execute("UPDATE runhub.projects SET digest_next_at = runhub.next_digest_at(timezone, digest_hour, now()) "
                      "WHERE digest_enabled")
    print(f"\nload average at end: {loadavg()}; measured part {time.monotonic() - t_measure:.0f} s, "
          f"total {time.monotonic() - t_start:.0f} s")
    print(f"targets: all {args.projects:,} served in one run met; ratio <= {RATIO_TARGET:g} {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
