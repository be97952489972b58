"""Workflow benchmarks: preview against its count on every shop shape, and the cost of executing a run.

    .venv/bin/python bench/workflows.py                      # embedded cluster in .runhub-bench (data kept for re-runs)
    .venv/bin/python bench/workflows.py --rounds 5 --calls 7 --rebuild

Data (generated in the server once, kept): one shop per shape around a middle one (20,000
customers, 40 days of history, 60 % of checkouts paid), each dimension swept on its own —
customers 1,000 / 20,000 / 100,000, history 7 / 40 / 365 days, share paid 20 / 60 / 90 % — plus
the middle shop busy: a third of its customers suppressed, two in five mailed by a promotion a day
ago, a third of its carts sent a recovery; and 1,000 other shops of 300 events around them. Every
customer has a first event (a sign-up or a lead); checkouts (1.5 a customer) at random instants of
the history, each paid 20 minutes later at the shape's share.

1. Preview: per shape and per action and segmentation (recovery, promotion to the last 7 days, 30
   days and everyone, onboarding), --rounds rounds of --calls calls alternating with the count it
   shows (one count(*) over runhub._recipients of who is left once every exclusion applies, planned
   as the preview plans its own): per round the ratio of the medians. Prints each shape's median
   and spread; judges the worst median over every shape and action (target <= 1.5) and the
   100,000-customer shop's preview p95 (target <= 50 ms).
2. Execution: a 1,000-recipient run against bare INSERT ... SELECTs of the same rows (each
   recipient and its message) into plain tables, side by side (target <= 1.6).
Exits 1 when a target is missed. Wall-clock on a shared machine: run it on a quiet one.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runhub_loader.db.deploy import deploy  # noqa: E402
from benchlib import database_url, kept_data_set, loadavg, parser as bench_parser, record, vacuum, vacuum_analyze  # noqa: E402

OWNER = uuid.UUID("00000000-0000-4000-8000-00000000b0b0")
# What a round of the execution bench writes, either side (each round rolls back).
RUN_TABLES = ("runhub.workflow_runs", "runhub.workflow_run_recipients", "runhub.outbox",
              "public.bench_plain", "public.bench_plain_messages")
SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}  # every recipient mailed: like for like
DATA_VERSION = "shapes-1"
# (name, customers, days of history, share of checkouts paid, busy)
SHAPES = [
    ("middle", 20_000, 40, 0.6, False),
    ("1k customers", 1_000, 40, 0.6, False),
    ("100k customers", 100_000, 40, 0.6, False),
    ("7 days", 20_000, 7, 0.6, False),
    ("365 days", 20_000, 365, 0.6, False),
    ("20% paid", 20_000, 40, 0.2, False),
    ("90% paid", 20_000, 40, 0.9, False),
    ("busy", 20_000, 40, 0.6, True),
]
BIG_SHAPE = "100k customers"
OTHER_SHOPS, OTHER_EVENTS = 1_000, 300
PREVIEWS = [
    ("recover_abandoned", {}),
    ("send_promo", {"subject": "Hello", "content": "Sale", "segmentation": "recent_7d"}),
    ("send_promo", {"subject": "Hello", "content": "Sale", "segmentation": "recent_30d"}),
    ("send_promo", {"subject": "Hello", "content": "Sale", "segmentation": "all"}),
    ("onboard_users", {}),
]
RATIO_TARGET, P95_TARGET_MS, EXECUTION_TARGET = 1.5, 50.0, 1.6


# -- the data set ----------------------------------------------------------------------------------

def load(conn) -> None:
    """Every shape's shop and the other shops, generated in the server (about a minute, once)."""
    t0 = time.monotonic()
    conn.execute("SELECT setseed(0.24)")
    conn.execute("CREATE TABLE public.bench_shapes (name text PRIMARY KEY, project_id uuid NOT NULL)")
    for name, customers, days, paid, busy in SHAPES:
        project = conn.execute("SELECT runhub.create_project(%s, %s, 'UTC', 'EUR')", (f"Shape {name}", OWNER)).fetchone()[0]
        conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, OWNER, Jsonb(SETTINGS)))
        load_shop(conn, project, customers, days, paid)
        if busy:
            make_busy(conn, project, customers)
        conn.execute("INSERT INTO public.bench_shapes VALUES (%s, %s)", (name, project))
        conn.commit()
        print(f"  {name} ({time.monotonic() - t0:.0f} s)", flush=True)
    others = conn.execute("SELECT array_agg(runhub.create_project('Other shop ' || g, %s, 'UTC', 'EUR'))"
                          " FROM generate_series(1, %s) g", (OWNER, OTHER_SHOPS)).fetchone()[0]
    conn.execute("""
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, amount_cents, currency)
        SELECT p, (ARRAY['checkout_started','payment_succeeded','lead_created','user_signed_up'])[1 + g %% 4],
               now() - random() * interval '90 days', 'e' || g, 'cart-' || (g / 2), 'c' || (g %% 50) || '@other.example',
               CASE WHEN g %% 4 < 2 THEN 1000 + g END, CASE WHEN g %% 4 < 2 THEN 'EUR' END
          FROM unnest(%s::uuid[]) p, generate_series(1, %s) g""", (others, OTHER_EVENTS))
    conn.execute("SELECT count(runhub.rebuild_customers(p)) FROM unnest(%s::uuid[]) p", (others,))
    conn.execute("CREATE TABLE public.bench_shapes_meta AS SELECT %s::text AS version", (DATA_VERSION,))
    conn.commit()
    vacuum_analyze(conn, ["runhub.business_events", "runhub.customers", "runhub.workflow_run_recipients",
                          "runhub.workflow_runs", "runhub.suppressions"])
    print(f"loaded in {time.monotonic() - t0:.0f} s", flush=True)


def load_shop(conn, project, customers: int, days: int, paid: float) -> None:
    """A first event per customer (one in five a sign-up, the rest leads), 1.5 checkouts a
    customer, each paid 20 minutes later with probability `paid`, all within `days`."""
    conn.execute("""
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, customer_email,
                                            customer_name, customer_locale)
        SELECT %(p)s, CASE WHEN g %% 5 = 0 THEN 'user_signed_up' ELSE 'lead_created' END,
               now() - random() * make_interval(days => %(days)s), 'first-' || g, 'c' || g || '@shape.example',
               'Customer ' || g, (ARRAY['en', 'fr', 'de', 'es'])[1 + g %% 4]
          FROM generate_series(1, %(c)s) g""", {"p": project, "days": days, "c": customers})
    conn.execute("""
        WITH checkouts AS (
            SELECT g, 1 + (g::bigint * 7919) %% %(c)s AS who, now() - random() * make_interval(days => %(days)s) AS at,
                   random() < %(paid)s AS paid
              FROM generate_series(1, %(c)s * 3 / 2) g)
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, amount_cents, currency, payload)
        SELECT %(p)s, k.kind, least(now(), c.at + k.later), k.kind || '-' || c.g, 'cart-' || c.g,
               'c' || c.who || '@shape.example', 1000 + c.g %% 9000, 'EUR', jsonb_build_object('cartId', 'cart-' || c.g)
          FROM checkouts c,
               LATERAL (VALUES ('checkout_started', interval '0'), ('payment_succeeded', interval '20 minutes')) k(kind, later)
         WHERE k.kind = 'checkout_started' OR c.paid""", {"p": project, "days": days, "c": customers, "paid": paid})
    conn.execute("SELECT runhub.rebuild_customers(%s)", (project,))  # loaded past ingest


def make_busy(conn, project, customers: int) -> None:
    """A third of the customers suppressed; two in five mailed by a promotion a day ago; a third of
    the carts of the last two days sent a recovery an hour ago (runs as the sender leaves them)."""
    conn.execute("""INSERT INTO runhub.suppressions (project_id, email, reason)
                    SELECT %s, 'c' || g || '@shape.example', 'unsubscribed' FROM generate_series(3, %s, 3) g""",
                 (project, customers))
    for action, hours, params in (("send_promo", 24, {"subject": "Hi", "content": "Sale", "segmentation": "all", "isUpdate": False}),
                                  ("recover_abandoned", 1, {})):
        run = conn.execute("""
            INSERT INTO runhub.workflow_runs (project_id, action_id, status, requested_at, started_at, executed_at,
                                              completed_at, idempotency_key, params, result, triggered_by, triggered_by_role)
            SELECT %(p)s, %(a)s, 'succeeded', t.at, t.at, t.at, t.at + interval '10 minutes', 'busy-' || %(a)s, %(params)s,
                   '{"totalRecipients": 0, "successful": 0, "failed": 0, "cancelled": 0}', %(o)s, 'owner'
              FROM (SELECT now() - make_interval(hours => %(h)s) AS at) t RETURNING id""",
                           {"p": project, "a": action, "h": hours, "params": Jsonb(params), "o": OWNER}).fetchone()[0]
        if action == "send_promo":
            conn.execute("""INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, name, status, created_at)
                            SELECT %s, %s, 'c' || g || '@shape.example', 'Customer ' || g, 'sent', now() - interval '24 hours'
                              FROM generate_series(1, %s) g WHERE g %% 5 < 2""", (run, project, customers))
        else:
            conn.execute("""INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, cart_id, status, created_at)
                            SELECT DISTINCT ON (e.customer_email) %s, %s, e.customer_email, e.correlation_id, 'sent',
                                   now() - interval '1 hour'
                              FROM runhub.business_events e
                             WHERE e.project_id = %s AND e.event_type = 'checkout_started'
                               AND e.occurred_at > now() - interval '2 days' AND hashtext(e.correlation_id) %% 3 = 0
                             ORDER BY e.customer_email, e.occurred_at DESC""", (run, project, project))


# -- previews --------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def audience_count_function(conn) -> None:
    """The count the preview shows, planned as the preview's own query is: inside PL/pgSQL, a
    custom plan per call (at the top level the planner keeps the builder's other branches)."""
    conn.execute("""CREATE OR REPLACE FUNCTION public.bench_audience_count(p_project uuid, p_action text, p_params jsonb)
                    RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off
                    SET plan_cache_mode = force_custom_plan
                    AS $$ BEGIN
                        RETURN (SELECT count(*) FROM (SELECT r.excluded_by FROM runhub._recipients(p_project, p_action, p_params, now()) r
                                                       OFFSET 0) r WHERE r.excluded_by IS NULL);
                    END $$""")
    conn.commit()


def timed(conn, sql: str, params) -> float:
    t0 = time.perf_counter()
    conn.execute(sql, params).fetchone()
    elapsed = (time.perf_counter() - t0) * 1000
    conn.rollback()
    return elapsed


def bench_shape(conn, project, rounds: int, calls: int) -> list[tuple[str, int, list[float], list[float]]]:
    """Per action: (label, count, per-round ratios, every preview's ms)."""
    results = []
    for action, params in PREVIEWS:
        full = conn.execute("SELECT runhub._workflow_params(%s, %s)", (action, Jsonb(params))).fetchone()[0]
        count = conn.execute("SELECT runhub.preview(%s, %s, %s, %s)", (project, OWNER, action, Jsonb(params))).fetchone()[0]["count"]
        conn.rollback()
        ratios, previews = [], []
        for _ in range(rounds):
            shown, counted = [], []
            for _ in range(calls):
                shown.append(timed(conn, "SELECT runhub.preview(%s, %s, %s, %s)", (project, OWNER, action, Jsonb(params))))
                counted.append(timed(conn, "SELECT public.bench_audience_count(%s, %s, %s)", (project, action, Jsonb(full))))
            ratios.append(statistics.median(shown) / statistics.median(counted))
            previews += shown
        label = action + (f" {params['segmentation']}" if "segmentation" in params else "")
        results.append((label, count, ratios, previews))
    return results


def bench_previews(conn, shapes: dict, rounds: int, calls: int) -> bool:
    audience_count_function(conn)
    print(f"\n1. preview / its count, per shape: median of {rounds} rounds (each the ratio of the medians of {calls} "
          f"calls each way, alternating) and the spread; preview p50/p95 in ms")
    worst, big_p95, worst_ratios = (0.0, ""), 0.0, []
    for name, customers, days, paid, busy in SHAPES:
        print(f"  {name}: {customers:,} customers, {days} days, {paid:.0%} paid{', busy' if busy else ''}")
        for label, count, ratios, previews in bench_shape(conn, shapes[name], rounds, calls):
            med = statistics.median(ratios)
            p95 = percentile(previews, 0.95)
            if med > worst[0]:
                worst, worst_ratios = (med, f"{name}, {label}"), ratios
            if name == BIG_SHAPE:
                big_p95 = max(big_p95, p95)
            print(f"    {label:28} count {count:>6}  ratio {med:5.2f} ({min(ratios):.2f}-{max(ratios):.2f})  "
                  f"p50 {percentile(previews, 0.5):6.1f}  p95 {p95:6.1f}", flush=True)
    ok = worst[0] <= RATIO_TARGET and big_p95 <= P95_TARGET_MS
    record("workflows", f"preview, worst shape ({worst[1]})", "its count", worst_ratios, f"<= {RATIO_TARGET}",
           worst[0] <= RATIO_TARGET, f"{len(SHAPES)} shapes x {len(PREVIEWS)} previews")
    record("workflows", f"preview p95 ms, {BIG_SHAPE}", "(absolute, ms)", big_p95, f"<= {P95_TARGET_MS:.0f}",
           big_p95 <= P95_TARGET_MS, "wall-clock: the machine's own speed")
    print(f"worst preview / count: {worst[0]:.2f} ({worst[1]}; target <= {RATIO_TARGET}); "
          f"{BIG_SHAPE} preview p95: {big_p95:.1f} ms (target <= {P95_TARGET_MS:.0f}): {'ok' if ok else 'MISSED'}")
    return ok


# -- execution -------------------------------------------------------------------------------------

def bench_execution(conn, rounds: int) -> bool:
    """A project whose promo audience is exactly 1,000; each round rolls back."""
    owner = uuid.uuid4()
    project = conn.execute("SELECT runhub.create_project('Exec shop', %s, 'UTC', 'EUR')", (owner,)).fetchone()[0]
    conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(SETTINGS)))
    conn.execute("""INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, customer_email, customer_name)
                    SELECT %s, 'lead_created', now() - interval '1 hour', 'lead:' || g, 'x' || g || '@exec.example', 'X ' || g
                      FROM generate_series(1, 1000) g""", (project,))
    conn.execute("SELECT runhub.rebuild_customers(%s)", (project,))
    conn.execute("CREATE TABLE IF NOT EXISTS public.bench_plain (email text, name text, locale text, cart_id text,"
                 " amount_cents bigint, currency char(3), excluded_by text)")
    conn.execute("CREATE TABLE IF NOT EXISTS public.bench_plain_messages (to_email text, locale text,"
                 " variables jsonb, message_id text)")
    conn.commit()
    params = {"subject": "Hello", "content": "Sale", "segmentation": "recent_7d"}
    ratios, floors, run_times, both_times = [], [], [], []
    full_params = {**params, "isUpdate": False}
    for i in range(rounds):
        run = claimed_run(conn, project, owner, full_params, f"k{i}")
        run_times.append(timed_ms(lambda: conn.execute("SELECT runhub.execute_run(%s, 'bench')", (run,)).fetchone()))
        written = conn.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = %s", (run,)).fetchone()[0]
        assert written == 1000, written
        conn.rollback()
        both_times.append(timed_ms(lambda: bare_inserts(conn, project, full_params)))
        conn.rollback()
        run = claimed_run(conn, project, owner, full_params, f"t{i}")
        table_ms = timed_ms(lambda: bare_into_runhub_tables(conn, project, run, full_params))
        conn.rollback()
        ratios.append(run_times[-1] / both_times[-1])
        floors.append(table_ms / both_times[-1])
        # No side may scan the rows the rounds before it rolled back (the baseline's second
        # insert reads its whole table; execution's builder looks recent contacts up by index).
        vacuum(conn, RUN_TABLES)
    ratio = statistics.median(ratios)
    print(f"\n2. executing a 1,000-recipient run: median {statistics.median(run_times):.1f} ms (builder, 1,000 recipient "
          f"rows and 1,000 messages with their indexes, policy, lease checks); bare INSERT ... SELECTs of the same rows "
          f"(recipients and messages) into plain tables: median {statistics.median(both_times):.1f} ms")
    print(f"  execution / bare inserts: median {ratio:.2f}, spread {min(ratios):.2f}-{max(ratios):.2f} over {rounds} rounds "
          f"(target <= {EXECUTION_TARGET}): {'ok' if ratio <= EXECUTION_TARGET else 'OVER'}")
    print(f"  the same rows bare into runhub's own two tables (their indexes and constraints, nothing else) / bare "
          f"inserts: median {statistics.median(floors):.2f}, spread {min(floors):.2f}-{max(floors):.2f}: the tables' floor")
    record("workflows", "executing a 1,000-recipient run", "bare inserts into plain tables", ratios,
           f"<= {EXECUTION_TARGET}", ratio <= EXECUTION_TARGET,
           f"the same rows bare into runhub's own tables: {statistics.median(floors):.2f}")
    return ratio <= EXECUTION_TARGET


def timed_ms(call) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def claimed_run(conn, project, owner, params: dict, key: str):
    """A run as claim_runs leaves it (create_run's rate limit counts even rolled-back calls)."""
    return conn.execute(
        """INSERT INTO runhub.workflow_runs (project_id, action_id, idempotency_key, params, triggered_by,
                                             triggered_by_role, status, started_at, lease_owner, lease_expires_at)
           VALUES (%s, 'send_promo', %s, %s, %s, 'owner', 'running', now(), 'bench', now() + interval '5 minutes')
           RETURNING id""", (project, key, Jsonb(params), owner)).fetchone()[0]


def bare_inserts(conn, project, params: dict) -> None:
    """The baseline: the builder's recipients into a plain table, and one message row each, with its variables."""
    conn.execute("INSERT INTO public.bench_plain SELECT * FROM runhub._recipients(%s, 'send_promo', %s, now())"
                 " WHERE excluded_by IS NULL", (project, Jsonb(params)))
    conn.execute("""INSERT INTO public.bench_plain_messages
                    SELECT email, coalesce(locale, 'en'), jsonb_build_object('projectName', 'Exec shop',
                           'customerName', name, 'subject', 'Hello', 'content', 'Sale'), '<' || email || '@runhub>'
                      FROM public.bench_plain""")


def bare_into_runhub_tables(conn, project, run, params: dict) -> None:
    """The floor runhub's tables set: the builder's recipients and their messages, written bare."""
    conn.execute("""WITH rc AS (
                        INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, name, locale, status)
                        SELECT %(run)s, %(p)s, r.email, r.name, coalesce(r.locale, 'en'), 'queued'
                          FROM runhub._recipients(%(p)s, 'send_promo', %(params)s, now()) r WHERE r.excluded_by IS NULL
                        RETURNING id, email, name, locale)
                    INSERT INTO runhub.outbox (id, project_id, run_id, recipient_id, template, locale, to_email, to_name, message_id)
                    SELECT rc.id, %(p)s, %(run)s, rc.id, 'promo', rc.locale, rc.email, rc.name, '<' || %(run)s || '.' || rc.id || '@runhub>'
                      FROM rc""", {"run": run, "p": project, "params": Jsonb(params)})


def main() -> int:
    parser = bench_parser(__doc__, "superuser; it keeps the shapes' data set there")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per shape and action, and execution rounds x 3 [5]")
    parser.add_argument("--calls", type=int, default=7, help="preview calls each way per round [7]")
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls >= 1")
    url = database_url(args, "runhub_bench_shapes")
    print(f"load average at start: {loadavg()} ({os.cpu_count()} cores)")
    deploy(url, schedule_cron=False)
    with psycopg.connect(url) as conn:
        if not kept_data_set(conn, "public.bench_shapes_meta", "public.bench_shapes", {"version": DATA_VERSION}):
            load(conn)
        shapes = dict(conn.execute("SELECT name, project_id FROM public.bench_shapes").fetchall())
        conn.commit()
        ok = bench_previews(conn, shapes, args.rounds, args.calls)
        ok &= bench_execution(conn, max(10, args.rounds * 3))
    print(f"load average at end: {loadavg()}")
    print("reproduce: .venv/bin/python bench/workflows.py " + " ".join(sys.argv[1:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
