"""Scale benchmark: a million shops on one node, against a one-project database, side by side.

    .venv/bin/python bench/scale.py                    # 1,000,000 shops; cluster in .runhub-bench-scale
    .venv/bin/python bench/scale.py --shops 100000     # another size (rebuilds the data set)
    .venv/bin/python bench/scale.py --rebuild          # build the data set anew

The cluster runs on PostgreSQL's stock settings where they decide what a shop count can break
(max_connections 100, max_locks_per_transaction 64, max_worker_processes 8: the lock table
pg_dump and a restore need; fsync, synchronous_commit and full_page_writes on), with one
exception: shared_buffers 1 GB, a modest value for a node of a million shops (the stock 128 MB
is for a laptop: with it, one database's measure evicted the other's pages, and the figures
swung by 15 % from run to run). It is its own cluster, set so (and restarted) when it is not.

Three databases, built once and kept (the first run of a million takes about half an hour):
  - runhub_scale: --shops shops, each made by runhub.create_project (server-side, 10,000 a
    transaction: the function itself, so the same rows as one call each) with realistic
    settings through runhub.update_project_settings (20 time zones with their currencies and
    locales, a dozen industries; 80 % with the payments and e-mail integrations and a shop URL,
    60 % with daily digests at an hour of their own, some with a frequency cap) and, for 30 %, an
    admin through runhub.add_member. Among them the probe shop (2,000 customers: sign-ups over a
    month, 300 checkouts abandoned in the last day, 100 paid) and the digest shops (1 % of them:
    10,000 of a million) with yesterday's events in their own time zone.
  - runhub_scale_one: the probe shop alone: the one-project database.
  - runhub_scale_due: the digest shops alone: the baseline of the digest job with 1 % due.
The shops are built in two steps, so that backup and restore are measured at a tenth of the size
too: time linear in the data shows as (time at N / time at N/10) against (size at N / size at N/10).

Measured, side by side in alternating order, each a median over rounds with its spread:
  create_project (one a transaction, call by call in turn on both databases; the projects made are
  deleted after each round) and, for the table's own floor, a bare insert of the same two rows with
  the WAL each writes, preview of
  the probe shop's recovery, create_run and process_runs of it (one run of 300 recipients, each
  sample in a transaction rolled back), CALL run_due_digests() with none due (after draining what
  came due) and with 1 % due (ms per digest, against the digest shops alone), runhub status (the
  function behind it), runhub deploy unchanged (a no-op) and changed (every sql/ file re-applied),
  and one backend's memory (pg_backend_memory_contexts, and its private pages) after serving 10,000 shops
  (an event, list_actions and a refused create_run each) against one shop served 10,000 times.
Printed too: database size and bytes per shop, relations in the database, pg_dump -Fc (time, size,
pg_dump's peak memory) and pg_restore --single-transaction (time) of each database, and a
pg_basebackup of the whole cluster (time, size).

Targets: every API ratio <= 1.1, status and deploy <= 1.5, backup and restore succeed, their time
growing no faster than 1.5 x the data (the dump's bytes) from N/10 to N. Exits 1 when one is missed.
A first round of each measure warms both sides up and is not counted.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runhub_loader.assets import CODE_FOLDERS, DEFAULT_SOURCE  # noqa: E402
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.db.embedded import Cluster, pg_bindir  # noqa: E402
from runhub_loader.db.status import collect  # noqa: E402
from benchlib import loadavg, parser as bench_parser, record, vacuum_analyze  # noqa: E402

BIG, ONE, DUE = "runhub_scale", "runhub_scale_one", "runhub_scale_due"
DATA_VERSION = 2  # 2: each digest shop has buyers of its own
SHOPS = 1_000_000
BATCH = 10_000
SERVED = 10_000  # shops one backend serves for the memory figure
API_TARGET, OPS_TARGET, LINEAR_TARGET = 1.1, 1.5, 1.5
STOCK = {"max_connections": "100", "max_locks_per_transaction": "64", "max_worker_processes": "8",
         "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "wal_compression": "off",
         "shared_buffers": "1GB"}
PROBE_OWNER = uuid.UUID("5ca1e000-0000-4000-8000-000000000001")
SETTINGS_SHOWN = ("max_connections", "max_locks_per_transaction", "max_worker_processes", "shared_buffers",
                  "fsync", "synchronous_commit", "full_page_writes", "wal_compression")

# (zone, currency, locale) the shops are spread over: DST both sides of the equator, half- and
# quarter-hour offsets, +13 and -10.
ZONES = [("Europe/Paris", "EUR", "fr"), ("Europe/Berlin", "EUR", "de"), ("Europe/Madrid", "EUR", "es"),
         ("Europe/London", "GBP", "en"), ("America/New_York", "USD", "en"), ("America/Chicago", "USD", "en"),
         ("America/Los_Angeles", "USD", "en"), ("America/Sao_Paulo", "BRL", "es"), ("America/Mexico_City", "MXN", "es"),
         ("America/St_Johns", "CAD", "en"), ("Asia/Kolkata", "INR", "en"), ("Asia/Kathmandu", "NPR", "en"),
         ("Asia/Dubai", "AED", "ar"), ("Africa/Cairo", "EGP", "ar"), ("Asia/Tokyo", "JPY", "en"),
         ("Australia/Sydney", "AUD", "en"), ("Australia/Adelaide", "AUD", "en"), ("Pacific/Auckland", "NZD", "en"),
         ("Pacific/Tongatapu", "TOP", "en"), ("Pacific/Honolulu", "USD", "en")]
INDUSTRIES = ["fashion", "food", "beauty", "books", "sports", "toys", "home", "garden", "pets", "music", "art", "tech"]

# Shops made as a platform makes them: create_project, then its settings, then (30 %) an admin;
# first..last: the shops' numbers; digest_fifths: how many fifths of them have daily digests on.
# The zones and industries are arrays, so the whole batch is one statement in the server.
BUILD_SHOPS = """
WITH z AS (SELECT %(zones)s::text[] AS zone, %(currencies)s::text[] AS currency, %(locales)s::text[] AS locale,
                  %(industries)s::text[] AS industry),
     made AS (
    SELECT i, owner, runhub.create_project(%(prefix)s || i, owner, z.zone[1 + i %% 20], z.currency[1 + i %% 20],
                                           z.locale[1 + i %% 20], z.industry[1 + (i / 20) %% 12]) AS project
      FROM z, (SELECT i, gen_random_uuid() AS owner FROM generate_series(%(first)s::int, %(last)s::int) i OFFSET 0) s),
     set AS (
    SELECT i, owner, project, runhub.update_project_settings(project, owner, jsonb_strip_nulls(jsonb_build_object(
               'integrations', CASE WHEN i %% 10 < 8 THEN '["payments", "email"]'::jsonb
                                    WHEN i %% 10 = 8 THEN '["email"]'::jsonb ELSE '[]'::jsonb END,
               'shopUrl', CASE WHEN i %% 10 < 8 THEN 'https://shop-' || i || '.example.com' END,
               'frequencyCapHours', CASE WHEN i %% 7 = 0 THEN 24 END,
               'dailyDigestEnabled', i %% 5 < %(digest_fifths)s,
               'dailyDigestHour', CASE WHEN i %% 5 < %(digest_fifths)s THEN i %% 24 END,
               'dailyDigestRecipient', CASE WHEN i %% 5 < %(digest_fifths)s THEN 'owner-' || i || '@example.com' END)))
           AS settings
      FROM made OFFSET 0)
SELECT count(*) FROM set, LATERAL (SELECT runhub.add_member(set.project, set.owner, gen_random_uuid(), 'admin')
                                     WHERE set.i %% 10 < 3) m"""

# The probe shop's events, relative to now: 2,000 customers signed up over a month; 400 of them
# started a checkout in the last 20 hours, 100 of those paid for it. Idempotency keys fixed, so a
# rebuild makes the same shop.
PROBE_EVENTS = """
SELECT jsonb_agg(e) FROM (
    SELECT jsonb_build_object('type', 'user_signed_up', 'occurredAt', now() - (i % 30 + 1) * interval '1 day',
                              'idempotencyKey', 'probe-signup-' || i,
                              'customer', jsonb_build_object('email', 'c' || i || '@probe.example', 'name', 'C ' || i)) AS e
      FROM generate_series(1, 2000) i
    UNION ALL
    SELECT jsonb_build_object('type', 'checkout_started', 'occurredAt', now() - (2 + i % 18) * interval '1 hour',
                              'idempotencyKey', 'probe-checkout-' || i, 'correlationId', 'cart-' || i,
                              'customer', jsonb_build_object('email', 'c' || i || '@probe.example'),
                              'amountCents', 1500 + i * 7, 'currency', 'EUR', 'payload', jsonb_build_object('cartId', 'cart-' || i))
      FROM generate_series(1, 400) i
    UNION ALL
    SELECT jsonb_build_object('type', 'payment_succeeded', 'occurredAt', now() - interval '1 hour',
                              'idempotencyKey', 'probe-pay-' || i, 'correlationId', 'cart-' || i,
                              'customer', jsonb_build_object('email', 'c' || i || '@probe.example'),
                              'amountCents', 1500 + i * 7, 'currency', 'EUR')
      FROM generate_series(1, 100) i) s"""

# Each digest shop's yesterday, in its own time zone: 3 checkouts, 2 payments, a lead and a sign-up,
# at local noon and after, from buyers of its own (keys carry the day: each day's run adds that
# day's, idempotently). Addresses shared by every shop would skew the planner's statistics of
# customers.email as no real platform's are.
DIGEST_EVENTS = """
SELECT count(runhub.ingest_events(p.id, (
    SELECT jsonb_agg(jsonb_build_object(
               'type', t.type, 'occurredAt', d.noon + k * interval '37 minutes',
               'idempotencyKey', 'dg-' || d.day || '-' || k,
               'customer', jsonb_build_object('email', 'buyer' || k || '@' || replace(p.id::text, '-', '') || '.example'),
               'amountCents', CASE WHEN t.type IN ('checkout_started', 'payment_succeeded') THEN 2000 + k * 150 END,
               'currency', CASE WHEN t.type IN ('checkout_started', 'payment_succeeded') THEN p.currency END))
      FROM unnest(ARRAY['checkout_started', 'checkout_started', 'checkout_started', 'payment_succeeded',
                        'payment_succeeded', 'lead_created', 'user_signed_up']) WITH ORDINALITY AS t(type, k))))
  FROM runhub.projects p,
       LATERAL (SELECT (now() AT TIME ZONE p.timezone)::date - 1 AS day) y,
       LATERAL (SELECT y.day, (y.day + time '12:00') AT TIME ZONE p.timezone AS noon) d
 WHERE p.name LIKE 'Digest shop %'"""


# -- the cluster and its databases ------------------------------------------------------------------

def stock_cluster(home: Path) -> Cluster:
    """The bench's own durable cluster, on PostgreSQL's stock settings for what scale breaks
    (STOCK; shared_buffers excepted)."""
    cluster = Cluster(home.resolve())
    cluster.start(fast=False)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        changed = False
        for name, value in STOCK.items():
            current = admin.execute("SELECT setting, unit FROM pg_settings WHERE name = %s", (name,)).fetchone()
            if _normalized(current) != value.lower():
                admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                changed = True
    if changed:
        cluster.restart()
    return cluster


def _normalized(setting) -> str:
    value, unit = setting
    if unit == "8kB":
        mb = int(value) * 8 // 1024
        return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"
    return value.lower()


def settings(conn) -> str:
    rows = conn.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY (%s) ORDER BY name",
                        (list(SETTINGS_SHOWN),)).fetchall()
    return ", ".join(f"{n}={_normalized((v, u))}" for n, v, u in rows)


def ensure_database(admin, name: str, rebuild: bool) -> bool:
    """Create the database if missing (dropped first with rebuild); True when it holds a finished
    data set of this version and size."""
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists and rebuild:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        exists = None
    if not exists:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return bool(exists)


def meta(conn) -> dict | None:
    if not conn.execute("SELECT to_regclass('public.bench_scale_meta') IS NOT NULL").fetchone()[0]:
        return None
    row = conn.execute("SELECT version, shops, built, done FROM public.bench_scale_meta").fetchone()
    return dict(zip(("version", "shops", "built", "done"), row))


def set_meta(conn, shops: int, built: int, done: bool) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS public.bench_scale_meta (version int, shops int, built int, done boolean)")
    conn.execute("DELETE FROM public.bench_scale_meta")
    conn.execute("INSERT INTO public.bench_scale_meta VALUES (%s, %s, %s, %s)", (DATA_VERSION, shops, built, done))


# -- building ---------------------------------------------------------------------------------------

def build_shops(conn, prefix: str, first: int, last: int) -> None:
    """Shops first..last (numbers) through the API, BATCH a transaction, with progress. Digest
    shops all have digests on, the others three in five."""
    zones, currencies, locales = (list(x) for x in zip(*ZONES))
    started, made = time.perf_counter(), 0
    for start in range(first, last + 1, BATCH):
        end = min(start + BATCH - 1, last)
        with conn.transaction():
            conn.execute(BUILD_SHOPS, {"zones": zones, "currencies": currencies, "locales": locales,
                                       "industries": INDUSTRIES, "prefix": prefix, "first": start, "last": end,
                                       "digest_fifths": 5 if prefix.startswith("Digest") else 3})
        made += end - start + 1
        rate = made / (time.perf_counter() - started)
        print(f"  {prefix.strip()}: {end:>9,} of {last:,} ({rate:,.0f} shops/s, load {loadavg()})", flush=True)


def build_probe(conn) -> uuid.UUID:
    """The probe shop, in one transaction (a build stopped halfway leaves none)."""
    with conn.transaction():
        return _build_probe(conn)


def _build_probe(conn) -> uuid.UUID:
    project = conn.execute("SELECT runhub.create_project('Probe shop', %s, 'Europe/Paris', 'EUR')",
                           (PROBE_OWNER,)).fetchone()[0]
    conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)",
                 (project, PROBE_OWNER, Jsonb({"shopUrl": "https://probe.example", "integrations": ["payments", "email"]})))
    events = conn.execute(PROBE_EVENTS).fetchone()[0]
    for start in range(0, len(events), 1000):
        conn.execute("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(events[start:start + 1000])))
    return project


def build_steps(name: str, shops: int) -> list[tuple]:
    """What each database holds, in the order it is built: (what, first number, last number,
    shops once done). The big one stops at a tenth of its shops on the way."""
    digest = shops // 100
    bulk = shops - digest - 1
    steps = {ONE: [("probe", 1, 1, 1)],
             DUE: [("Digest shop ", 1, digest, digest)],
             BIG: [("probe", 1, 1, 1), ("Digest shop ", 1, digest, digest + 1),
                   ("Shop ", 1, shops // 10 - digest - 1, shops // 10), ("Shop ", shops // 10 - digest, bulk, shops)]}
    return steps[name]


def build(cluster: Cluster, name: str, shops: int, rebuild: bool, on_tenth) -> None:
    """One database, resumed where an earlier build stopped (a step at a time); on_tenth(url,
    shops) once the big one holds a tenth of its shops (backup and restore at that size)."""
    url = cluster.url(name)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        ensure_database(admin, name, rebuild)
    with psycopg.connect(url, autocommit=True) as conn:
        state = meta(conn)
    if state and (state["version"], state["shops"]) != (DATA_VERSION, shops):
        raise SystemExit(f"{name} holds another data set ({state}): run with --rebuild")
    if state and state["done"]:
        return
    deploy(url, schedule_cron=False)
    built = state["built"] if state else 0
    with psycopg.connect(url, autocommit=True) as conn:
        for what, first, last, total in build_steps(name, shops):
            if built >= total:
                continue
            print(f"{name}: {what.strip()} {first:,} to {last:,}", flush=True)
            if what == "probe":
                build_probe(conn)
            else:
                build_shops(conn, what, first, last)
            built = total
            set_meta(conn, shops, built, False)
            if name == BIG and total == shops // 10:
                vacuum_analyze(conn, ["runhub.projects", "runhub.project_members"])
                on_tenth(url, built)
        vacuum_analyze(conn, ["runhub.projects", "runhub.project_members", "runhub.business_events", "runhub.customers"])
        set_meta(conn, shops, built, True)


# -- measuring ---------------------------------------------------------------------------------------

def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def side_by_side(names: list[str], rounds: int, big_fn, one_fn, target: float, results: list) -> None:
    """Per round, each side once, in alternating order; each returns a tuple of ms (one per name).
    A first round warms both up (caches, plans, hint bits) and is not counted."""
    big_fn(), one_fn()
    samples = []
    for r in range(rounds):
        if r % 2 == 0:
            big = big_fn()
            one = one_fn()
        else:
            one = one_fn()
            big = big_fn()
        samples.append((big, one))
    for k, name in enumerate(names):
        report(name, [(big[k], one[k]) for big, one in samples], target, results)


def report(name: str, samples: list[tuple[float, float]], target: float, results: list) -> None:
    """Print the big side's and the baseline's medians, the ratio's median over the rounds and its
    spread; record the verdict."""
    ratios = [big / one for big, one in samples]
    ratio = statistics.median(ratios)
    ok = ratio <= target
    results.append((name, ratio, target, ok))
    record("scale", f"{name}, a million shops", "one shop", ratios, f"<= {target:g}", ok)
    print(f"  {name:34} {statistics.median(b for b, _ in samples):9.3f} ms vs "
          f"{statistics.median(o for _, o in samples):9.3f} ms   ratio {ratio:5.2f} "
          f"(spread {min(ratios):.2f}-{max(ratios):.2f}, target <= {target:g}) {'ok' if ok else 'MISSED'}   "
          f"load {loadavg()}", flush=True)


def median_ms(calls: int, call) -> float:
    return statistics.median(timed(call) for _ in range(calls))


# create_project, and the table's own floor: a bare insert of the same two rows (the project, its
# owner's membership) with no check, as a superuser. Both with a random owner, as a platform's are.
CREATE_PROJECT = "SELECT runhub.create_project('Bench create_project', gen_random_uuid(), 'Europe/Paris', 'EUR')"
BARE_PROJECT = """WITH p AS (INSERT INTO runhub.projects (id, name, owner_id, timezone, currency, locale)
                           VALUES (runhub._time_ordered_uuid(), 'Bench create_project', gen_random_uuid(),
                                   'Europe/Paris', 'EUR', 'en') RETURNING id, owner_id)
                  INSERT INTO runhub.project_members (project_id, user_id, role) SELECT id, owner_id, 'owner' FROM p"""


def insert_pairs(big: str, one: str, calls: int, statement: str, wal: dict | None = None) -> tuple[float, float]:
    """statement, one a transaction (each commit flushed, as deployed), on both databases call by
    call in turn, so both sides see the same moments of a noisy machine; the projects made are
    deleted afterwards. Returns each side's median ms; adds each side's WAL bytes per call to `wal`
    (read around each call, outside its time)."""
    with psycopg.connect(big, autocommit=True) as b, psycopg.connect(one, autocommit=True) as o:
        lsn = "SELECT pg_current_wal_insert_lsn()"
        diff = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)::bigint"
        times, written = {b: [], o: []}, {b: 0, o: 0}
        for i in range(calls):
            for conn in ((b, o) if i % 2 == 0 else (o, b)):
                before = conn.execute(lsn).fetchone()[0]
                times[conn].append(timed(lambda: conn.execute(statement)))
                written[conn] += conn.execute(diff, (before,)).fetchone()[0]
        for conn in (b, o):
            conn.execute("DELETE FROM runhub.projects WHERE name = 'Bench create_project'")
    if wal is not None:
        wal.setdefault("big", []).append(written[b] / calls)
        wal.setdefault("one", []).append(written[o] / calls)
    return statistics.median(times[b]), statistics.median(times[o])


def probe(conn) -> uuid.UUID:
    return conn.execute("SELECT id FROM runhub.projects WHERE name = 'Probe shop'").fetchone()[0]


def preview_ms(url: str, calls: int) -> tuple[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        project = probe(conn)
        return (median_ms(calls, lambda: conn.execute("SELECT runhub.preview(%s, %s, 'recover_abandoned', '{}')",
                                                      (project, PROBE_OWNER))),)


def run_ms(url: str, samples: int) -> tuple[float, float]:
    """create_run and process_runs of the probe shop's recovery, each sample in a transaction that
    is rolled back (no cooldown, rate count or mail stays); then the tables it wrote are vacuumed,
    so no round reads the dead rows of the ones before."""
    creates, executions = [], []
    with psycopg.connect(url) as conn:
        project = probe(conn)
        conn.execute("SELECT runhub.preview(%s, %s, 'recover_abandoned', '{}')", (project, PROBE_OWNER))
        conn.commit()
        for _ in range(samples):
            key = f"bench-{uuid.uuid4()}"
            creates.append(timed(lambda: conn.execute(
                "SELECT runhub.create_run(%s, %s, 'recover_abandoned', %s)", (project, PROBE_OWNER, key))))
            t0 = time.perf_counter()
            executed = conn.execute("SELECT runhub.process_runs(1)").fetchone()[0]
            executions.append((time.perf_counter() - t0) * 1000)
            if executed != 1:
                raise SystemExit(f"process_runs executed {executed} runs, not the bench's one")
            conn.rollback()
        vacuum_analyze(conn, ["runhub.workflow_runs", "runhub.workflow_run_recipients", "runhub.outbox"])
    return statistics.median(creates), statistics.median(executions)


def drain_digests(conn) -> None:
    """Serve whatever came due (shops whose local hour passed while the bench ran)."""
    while conn.execute("SELECT 1 FROM runhub.projects WHERE digest_next_at <= now() LIMIT 1").fetchone():
        conn.execute("CALL runhub.run_due_digests(NULL)")


def digests_none_due_ms(url: str, calls: int) -> tuple[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        drain_digests(conn)
        return (median_ms(calls, lambda: conn.execute("CALL runhub.run_due_digests(NULL)")),)


def digests_due_ms(url: str) -> tuple[float]:
    """ms per digest of CALL run_due_digests() with the digest shops due (their recent digests and
    queued digest mail gone first, so each round does the same work); none is due afterwards."""
    with psycopg.connect(url, autocommit=True) as conn:
        drain_digests(conn)
        conn.execute("""DELETE FROM runhub.digests d USING runhub.projects p
                         WHERE p.id = d.project_id AND p.name LIKE 'Digest shop %'
                           AND d.day >= (now() AT TIME ZONE p.timezone)::date - 2""")
        conn.execute("""DELETE FROM runhub.outbox o WHERE o.template = 'digest' AND o.run_id IS NULL
                           AND NOT EXISTS (SELECT 1 FROM runhub.digests d WHERE d.message_id = o.id)""")
        due = conn.execute("""UPDATE runhub.projects SET digest_next_at = now() - interval '1 minute'
                               WHERE name LIKE 'Digest shop %'""").rowcount
        vacuum_analyze(conn, ["runhub.projects", "runhub.digests", "runhub.outbox"])
        t0 = time.perf_counter()
        queued = conn.execute("CALL runhub.run_due_digests(NULL)").fetchone()[0]
        elapsed = (time.perf_counter() - t0) * 1000
    if queued < due * 0.99:  # a shop's local midnight may pass during the run: it is skipped, rightly
        raise SystemExit(f"{url}: the digest job queued {queued} digests for {due} due shops")
    return (elapsed / due,)


def status_ms(url: str, calls: int) -> tuple[float]:
    return (median_ms(calls, lambda: collect(url)),)


def deploy_ms(url: str, sources: list[Path], calls: int) -> tuple[float]:
    """Deploys of the sources in turn: one source, a no-op each; two that differ, a full one each."""
    return (statistics.median(timed(lambda: deploy(url, sources[i % len(sources)], schedule_cron=False))
                              for i in range(calls)),)


def changed_checkout(folder: Path) -> Path:
    """A copy of the deployable code with one comment more: deploying it and this checkout in turn
    re-applies every sql/ file each time."""
    for name in CODE_FOLDERS:
        shutil.copytree(DEFAULT_SOURCE / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    last = sorted((folder / "sql").glob("*.sql"))[-1]
    last.write_text(last.read_text() + "\n-- bench/scale.py: a changed checkout\n")
    return folder


def backend_memory(url: str, shops: list) -> tuple[int, int]:
    """(bytes in one backend's memory contexts, its private memory: the anonymous pages of its
    process, not the shared buffers it touched) after it served these (project, owner) pairs in
    turn: list_actions, the last events, and a create_run each (refused: no preview)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i, (project, owner) in enumerate(shops):
            conn.execute("SELECT runhub.list_actions(%s, %s)", (project, owner))
            conn.execute("SELECT runhub.list_events(%s, %s, 'timeline', NULL, 5)", (project, owner))
            try:
                conn.execute("SELECT runhub.create_run(%s, %s, 'send_promo', %s, %s)",
                             (project, owner, f"mem-{i}", Jsonb({"subject": "s", "content": "c"})))
                raise SystemExit("a create_run without a preview went through")
            except psycopg.Error as exc:
                if not (exc.sqlstate or "").startswith("PT"):
                    raise
        contexts = conn.execute("SELECT sum(total_bytes) FROM pg_backend_memory_contexts").fetchone()[0]
        usage = Path(f"/proc/{conn.info.backend_pid}/smaps_rollup").read_text().splitlines()
    private = next(int(line.split()[1]) * 1024 for line in usage if line.startswith("Anonymous:"))
    return int(contexts), private


# -- size, backup and restore ------------------------------------------------------------------------

def sizes(url: str) -> dict:
    with psycopg.connect(url) as conn:
        size, relations, shops, shop_tables, datadir, oid = conn.execute(
            """SELECT pg_database_size(current_database()), (SELECT count(*) FROM pg_class),
                      (SELECT count(*) FROM runhub.projects),
                      (SELECT sum(pg_total_relation_size(t::regclass))
                         FROM unnest(ARRAY['runhub.projects', 'runhub.project_members', 'runhub.create_run_counts']) t),
                      current_setting('data_directory'),
                      (SELECT oid FROM pg_database WHERE datname = current_database())""").fetchone()
    files = len(os.listdir(Path(datadir) / "base" / str(oid)))
    return {"size": size, "relations": relations, "shops": shops, "shop_tables": shop_tables, "files": files}


def backup_and_restore(cluster: Cluster, name: str) -> dict:
    """pg_dump -Fc of the database (time, size, pg_dump's peak RSS) and pg_restore
    --single-transaction of it into a new database (time), dropped afterwards."""
    restored = f"{name}_restored"
    with tempfile.TemporaryDirectory(prefix="runhub-scale-") as folder:
        dump, errors = Path(folder) / f"{name}.dump", Path(folder) / "pg_dump.err"
        with open(errors, "w") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(pg_bindir() / "pg_dump"), "-Fc", "-f", str(dump), "--dbname", cluster.url(name)],
                                    stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # its own rusage: pg_dump's peak memory
            dump_s = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            return {"ok": False, "error": f"pg_dump: {errors.read_text().strip()[:500]}"}
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(restored)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(restored)))
            try:
                t0 = time.perf_counter()
                restore = subprocess.run([str(pg_bindir() / "pg_restore"), "--single-transaction", "--exit-on-error",
                                          "--dbname", cluster.url(restored), str(dump)], capture_output=True, text=True)
                restore_s = time.perf_counter() - t0
            finally:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(restored)))
        if restore.returncode:
            return {"ok": False, "error": f"pg_restore: {restore.stderr.strip()[:500]}"}
        return {"ok": True, "dump_s": dump_s, "dump_bytes": dump.stat().st_size, "dump_rss": usage.ru_maxrss * 1024,
                "restore_s": restore_s}


def physical_backup(cluster: Cluster) -> dict:
    """pg_basebackup of the whole cluster (tar format, WAL streamed alongside): the physical backup a
    platform runs (or pgBackRest, which copies the same files); time and size, then deleted."""
    with tempfile.TemporaryDirectory(prefix="runhub-scale-base-") as folder:
        t0 = time.perf_counter()
        proc = subprocess.run([str(pg_bindir() / "pg_basebackup"), "-h", str(cluster.socketdir), "-p", str(cluster.port),
                               "-U", "postgres", "-D", folder, "-Ft", "-X", "stream", "--checkpoint=fast"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(folder).iterdir())
    if proc.returncode:
        return {"ok": False, "error": proc.stderr.strip()[:500]}
    return {"ok": True, "seconds": seconds, "bytes": size}


def print_backup(label: str, shops: int, size: int, b: dict) -> None:
    if not b["ok"]:
        print(f"  {label:12} {shops:>9,} shops  FAILED: {b['error']}", flush=True)
        return
    print(f"  {label:12} {shops:>9,} shops, database {size / 2**20:8.1f} MB: pg_dump -Fc {b['dump_s']:7.1f} s "
          f"({b['dump_bytes'] / 2**20:7.1f} MB, pg_dump's peak memory {b['dump_rss'] / 2**20:6.1f} MB), "
          f"pg_restore --single-transaction {b['restore_s']:7.1f} s", flush=True)


# -- main ---------------------------------------------------------------------------------------------

def measure_api(big: str, one: str, due: str, shops: int, rounds: int, digest_rounds: int, results: list) -> None:
    print(f"\n{shops:,} shops vs one project, median of {rounds} rounds (ms per call)", flush=True)
    insert_pairs(big, one, 50, CREATE_PROJECT)  # warm-up
    wal: dict = {}
    report("create_project", [insert_pairs(big, one, 200, CREATE_PROJECT, wal) for _ in range(rounds)],
           API_TARGET, results)
    floor = []
    for _ in range(rounds):
        big_ms, one_ms = insert_pairs(big, one, 200, BARE_PROJECT)
        floor.append(big_ms / one_ms)
    print(f"  {'':34} the table's own floor, a bare insert of the same two rows: ratio {statistics.median(floor):.2f} "
          f"(spread {min(floor):.2f}-{max(floor):.2f}); WAL per create_project {statistics.median(wal['big']) / 1024:.1f} kB "
          f"vs {statistics.median(wal['one']) / 1024:.1f} kB: at this size each insert dirties pages not written "
          "since the last checkpoint, whose full images go to the WAL", flush=True)
    side_by_side(["preview (recovery: 300 of 2,000)"], rounds, lambda: preview_ms(big, 20), lambda: preview_ms(one, 20),
                 API_TARGET, results)
    side_by_side(["create_run", "process_runs (a run of 300)"], rounds, lambda: run_ms(big, 20), lambda: run_ms(one, 20),
                 API_TARGET, results)
    side_by_side(["run_due_digests, none due"], rounds, lambda: digests_none_due_ms(big, 30),
                 lambda: digests_none_due_ms(one, 30), API_TARGET, results)
    print(f"  (1 % due: the {shops // 100:,} digest shops among {shops:,} vs the same alone, ms per digest)", flush=True)
    side_by_side(["run_due_digests, 1 % due"], digest_rounds, lambda: digests_due_ms(big), lambda: digests_due_ms(due),
                 API_TARGET, results)


def measure_operations(big: str, one: str, rounds: int, results: list) -> None:
    side_by_side(["runhub status"], rounds, lambda: status_ms(big, 5), lambda: status_ms(one, 5), OPS_TARGET, results)
    with tempfile.TemporaryDirectory(prefix="runhub-scale-src-") as folder:
        changed = changed_checkout(Path(folder))
        for url in (big, one):
            deploy(url, DEFAULT_SOURCE, schedule_cron=False)
        side_by_side(["runhub deploy, unchanged"], rounds, lambda: deploy_ms(big, [DEFAULT_SOURCE], 5),
                     lambda: deploy_ms(one, [DEFAULT_SOURCE], 5), OPS_TARGET, results)
        side_by_side(["runhub deploy, every sql/ file"], rounds, lambda: deploy_ms(big, [changed, DEFAULT_SOURCE], 2),
                     lambda: deploy_ms(one, [changed, DEFAULT_SOURCE], 2), OPS_TARGET, results)
        for url in (big, one):
            deploy(url, DEFAULT_SOURCE, schedule_cron=False)


def measure_memory(big: str, one: str) -> None:
    with psycopg.connect(big) as conn:
        served = conn.execute("SELECT id, owner_id FROM runhub.projects ORDER BY id LIMIT %s", (SERVED,)).fetchall()
    with psycopg.connect(one) as conn:
        one_shop = [(probe(conn), PROBE_OWNER)] * len(served)
    (big_ctx, big_anon), (one_ctx, one_anon) = backend_memory(big, served), backend_memory(one, one_shop)
    print(f"\none backend after serving {len(served):,} shops vs one shop {len(one_shop):,} times: memory contexts "
          f"{big_ctx / 2**20:.1f} MB vs {one_ctx / 2**20:.1f} MB (ratio {big_ctx / one_ctx:.2f}), "
          f"private memory {big_anon / 2**20:.1f} MB vs {one_anon / 2**20:.1f} MB", flush=True)


def tenth_figures(url: str) -> tuple | None:
    """Backup and restore at a tenth of the shops, as the build measured them."""
    with psycopg.connect(url) as conn:
        if not conn.execute("SELECT to_regclass('public.bench_scale_tenth') IS NOT NULL").fetchone()[0]:
            return None
        row = conn.execute("SELECT figures FROM public.bench_scale_tenth").fetchone()
    return tuple(row[0]) if row else None


def measure_backups(cluster: Cluster, big: str, one: str, results: list) -> None:
    """Sizes, then backup and restore of the one-project database and the big one. Linear: from a
    tenth of the shops to all of them, the time grows no faster than 1.5 x the dump's bytes."""
    print("\nsize", flush=True)
    big_size, one_size = sizes(big), sizes(one)
    for label, s in (("shops", big_size), ("one project", one_size)):
        print(f"  {label:12} {s['shops']:>9,} projects: database {s['size'] / 2**20:8.1f} MB, {s['relations']:,} "
              f"relations, {s['files']:,} files in its folder", flush=True)
    per_shop = (big_size["shop_tables"] - one_size["shop_tables"]) / (big_size["shops"] - one_size["shops"])
    per_db = (big_size["size"] - one_size["size"]) / (big_size["shops"] - one_size["shops"])
    print(f"  a shop (with its settings and members, no events): {per_shop:.0f} bytes in projects, project_members "
          f"and create_run_counts with their indexes; {per_db:.0f} bytes of the database", flush=True)
    print("\nbackup and restore, on the cluster's stock lock settings", flush=True)
    baseline = ("one project", one_size["shops"], one_size["size"], backup_and_restore(cluster, ONE))
    final = ("shops", big_size["shops"], big_size["size"], backup_and_restore(cluster, BIG))
    for b in (baseline, final):
        print_backup(*b)
    physical = physical_backup(cluster)
    if physical["ok"]:
        print(f"  pg_basebackup of the whole cluster (its three databases): {physical['seconds']:.1f} s, "
              f"{physical['bytes'] / 2**20:.1f} MB", flush=True)
    else:
        print(f"  pg_basebackup FAILED: {physical['error']}", flush=True)
    succeeded = baseline[3]["ok"] and final[3]["ok"] and physical["ok"]
    results.append(("backup and restore succeed", 1.0 if succeeded else float("inf"), 1.0, succeeded))
    tenth = tenth_figures(big)
    if not tenth:
        print("  (no figure at a tenth of the shops: the build that measures it did not finish; --rebuild)")
        return
    print("  at a tenth of the shops (measured when the data set was built):", flush=True)
    print_backup(*tenth)
    if succeeded and tenth[3]["ok"]:
        data = final[3]["dump_bytes"] / tenth[3]["dump_bytes"]
        for what in ("dump_s", "restore_s"):
            growth = final[3][what] / tenth[3][what]
            ok = growth <= LINEAR_TARGET * data
            results.append((f"{what[:-2]} time growth against the data's", growth / data, LINEAR_TARGET, ok))
            print(f"  {what[:-2]}: time x{growth:.1f} for data x{data:.1f} (the dump's bytes) from {tenth[1]:,} to "
                  f"{final[1]:,} shops: {'linear' if ok else 'MISSED: faster than linear'}", flush=True)


def main() -> int:
    parser = bench_parser(__doc__, "unused: the bench needs its own cluster on stock settings", home=".runhub-bench-scale")
    parser.add_argument("--shops", type=int, default=SHOPS, help=f"shops in the big database [{SHOPS:,}]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side-by-side measure [5]")
    parser.add_argument("--digest-rounds", type=int, default=3, help="rounds of the digest job with 1 %% due [3]")
    args = parser.parse_args()
    if args.database_url:
        parser.error("bench/scale.py runs its own cluster on stock settings (--home), not --database-url")
    if args.shops < 1000 or args.rounds < 1 or args.digest_rounds < 1:
        parser.error("--shops must be at least 1,000, the rounds positive")

    print(f"load average at start: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    t_start = time.monotonic()
    cluster = stock_cluster(Path(args.home))
    with psycopg.connect(cluster.url("postgres")) as admin:
        print(f"cluster: {settings(admin)}", flush=True)
    def at_a_tenth(url: str, built: int) -> None:
        print(f"backup and restore at {built:,} shops", flush=True)
        tenth = ("a tenth", built, sizes(url)["size"], backup_and_restore(cluster, BIG))
        print_backup(*tenth)
        with psycopg.connect(url, autocommit=True) as conn:  # for the runs that find the data set built
            conn.execute("CREATE TABLE IF NOT EXISTS public.bench_scale_tenth (figures jsonb)")
            conn.execute("INSERT INTO public.bench_scale_tenth VALUES (%s)", (Jsonb(tenth),))

    for name in (ONE, DUE, BIG):
        build(cluster, name, args.shops, args.rebuild, at_a_tenth)
    big, one, due = cluster.url(BIG), cluster.url(ONE), cluster.url(DUE)
    for url in (big, one, due):
        deploy(url, schedule_cron=False)  # this checkout's code, on a data set an earlier run built
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute("CHECKPOINT")  # the build's writes flushed now, not during a measurement
    for url in (big, due):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DIGEST_EVENTS)  # yesterday's, in each shop's zone (idempotent)
            vacuum_analyze(conn, ["runhub.business_events", "runhub.customers"])
    results: list[tuple] = []
    measure_api(big, one, due, args.shops, args.rounds, args.digest_rounds, results)
    measure_operations(big, one, args.rounds, results)
    measure_memory(big, one)
    measure_backups(cluster, big, one, results)

    missed = [r for r in results if not r[3]]
    print(f"\nload average at end: {loadavg()}; total {time.monotonic() - t_start:.0f} s")
    print("targets: " + ("all met" if not missed else "MISSED: " + ", ".join(f"{m[0]} ({m[1]:.2f})" for m in missed)))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
