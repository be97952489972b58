"""Generated garbage, every function (security issue, item 8).

Every function each runhub role may EXECUTE (read from the catalog with has_function_privilege, so a
function granted later without an entry in SPECS fails test_every_granted_function_has_a_strategy)
is called, as a LOGIN role granted only that runhub role, with hostile values: wrong JSON types,
huge strings (100 KB and 5 MB, sparingly), NUL bytes, lone surrogates, invalid UUIDs and e-mails,
SQL-injection and format-string text, out-of-range and non-finite numbers, unknown keys, deep
nesting, infinite and out-of-range timestamps, nulls. Properties, per call:

a. it succeeds, or raises a documented error: SQLSTATE PT4xx, MESSAGE a key of
   runhub.error_catalog() with that SQLSTATE, DETAIL a JSON object, a HINT, and DETAIL and HINT
   bounded (a few KB) whatever the size of the input; every LOG line the call emits is bounded too;
b. a refused call writes nothing (a fingerprint of every table of schema runhub, read as the
   superuser, is unchanged), and a STABLE or IMMUTABLE function writes nothing even when it succeeds;
c. (test_injection_text_round_trips) injection text stored as data comes back byte-identical, and
   the tables are still there.

The one exception is input PostgreSQL itself refuses before any runhub code runs: a value that is no
value of the parameter's SQL type. Each call is preceded by a probe, `SELECT ($1::type) IS NULL, ...`
as the superuser: when the probe fails, the call must fail in exactly the same way (same exception
class and SQLSTATE, no runhub function in the error context), write nothing, and be one of
PG_REFUSALS / CLIENT_REFUSALS (test_postgresql_refuses_before_runhub_code lists one case of each).

Strategies are organised per SQL type (TYPE_POOLS, TYPE_STRATEGIES) plus per-argument overrides for
structure and meaning (ARG_POOLS, ARG_STRATEGIES: events, params, settings, cursors, filters,
workers, tokens, e-mails ...), keyed by "function.argument" or by the catalog's argument name (the
names mean the same thing across functions); SPECS gives each function a valid base call. For every function: a deterministic sweep puts each pooled value into each
argument of the base call, then hypothesis (derandomized, no example database) corrupts one or
more arguments at a time.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader

from helpers.db import DELETE, with_field

ROLES = ("runhub_app", "runhub_ingest", "runhub_sender", "runhub_reader")
WORKER = "hx-worker"  # the fixture's sender worker: it holds the leases of CLAIMED messages
SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}
PROMO = {"subject": "Winter sale", "content": "Everything -20% this week"}

# DETAIL and HINT of a refusal: each param is cut to 200 characters, so a few KB at most.
ECHO_BOUND = 4096
# A LOG line (RAISE LOG, seen with client_min_messages = log): record_sent_many logs up to 1000 ids.
LOG_BOUND = 64 * 1024

# What PostgreSQL refuses while converting a parameter to its SQL type, before runhub code runs.
PG_REFUSALS = {
    "22P02": "invalid_text_representation: a malformed uuid, integer or array literal; JSON that is no "
             "JSON (NaN, Infinity, a lone surrogate escape, an unescaped control character, truncated text)",
    "22P05": "untranslatable_character: the JSON escape \\u0000 (jsonb cannot hold it)",
    "22003": "numeric_value_out_of_range: an integer beyond int4/int8; a JSON number beyond numeric",
    "22007": "invalid_datetime_format: a timestamptz that is no timestamp",
    "22008": "datetime_field_overflow: a timestamptz out of range (year 294277, 4714 BC) or a field out of range",
    "54001": "statement_too_complex: JSON nested too deep for the parser (stack depth limit)",
}
# What psycopg refuses on the client, before anything is sent.
CLIENT_REFUSALS = {
    "psycopg.DataError": "PostgreSQL text fields cannot contain NUL (0x00) bytes",
    "UnicodeEncodeError": "surrogates not allowed",
}

HYPOTHESIS = settings(
    deadline=None, derandomize=True, database=None, print_blob=False,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each failure names its exact call
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example])
SESSION_OPTIONS = "-c statement_timeout=30s -c lock_timeout=10s -c client_min_messages=log"


# -- values ------------------------------------------------------------------------------------

class Raw(str):
    """JSON text put into a JSON document verbatim (NaN, 1e400, a deep array ...)."""

    def __repr__(self):
        return f"Raw({short(str(self))})"


class Big(str):
    """A huge string that prints as its size."""

    def __repr__(self):
        return f"<{len(self)} characters {str.__repr__(self[:12])}...>"


class Lazy:
    """A value made at call time (a fresh idempotency key each call)."""

    def __init__(self, make: Callable[[], Any], label: str):
        self.make, self.label = make, label

    def __repr__(self):
        return f"Lazy({self.label})"


def resolve(value):
    if isinstance(value, Lazy):
        return resolve(value.make())
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def dumps(value) -> str:
    """JSON text of value; Raw parts go in verbatim, floats may be NaN/Infinity (not JSON)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(k) if isinstance(k, Raw) else json.dumps(k, ensure_ascii=False)}:{dumps(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


UNSENDABLE = re.compile("[\x00\ud800-\udfff]")


def sendable(value) -> bool:
    """A str psycopg can send as text (no NUL, no lone surrogate)."""
    return isinstance(value, str) and not UNSENDABLE.search(value)


def short(value, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def iso(at: dt.datetime) -> str:
    return at.isoformat()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


INJECTION = "'; DROP TABLE runhub.projects; --"
INJECTIONS = [
    INJECTION,
    "$$; DROP TABLE runhub.business_events; $$",
    "$body$ SELECT 1 $body$ $1 $2",
    "%s %d %n %x %(name)s %% %1$s",
    "{field} {reason} {projectId} {0} {{}} ${1}",
    "\\ \\\\ \\' \\x00 \\u0000 E'\\n' \\.",
    "\" OR \"1\"=\"1",
    "') OR 1=1; SELECT pg_sleep(30); --",
    "Robert'); DELETE FROM runhub.workflow_runs; --",
    "<script>alert(1)</script>&amp;",
    "{{7*7}} ${7*7} #{7*7} {% raw %}",
    "\r\nBcc: victim@example.com\r\n.\r\n",
    "{actionId}{field}{reason}{value}" * 8,  # placeholders of the hint, in a param that fills it
]
UNICODE = ["\u202eevil\u202c", "Ωμέγα 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 e\u0301", "\u00a0\u200b\ufeff\u2028", "\x01\x1b[31m\x7f", "ﷺ" * 10]
BIG = Big("A" * 100_000)  # 100 KB
HUGE = Big("Ω" * 2_500_000)  # 5 MB of UTF-8
DEEP_ARRAY = Raw("[" * 1000 + "]" * 1000)  # deep, within the JSON parser's limit
DEEP_OBJECT = Raw('{"a":' * 1000 + "1" + "}" * 1000)
TOO_DEEP = Raw("[" * 100_000 + "]" * 100_000)  # the parser's stack depth limit (54001)
TEXT_SMALL = [None, "", " ", "\t\n\r", *INJECTIONS, *UNICODE, "a\x00b", "a\ud800b", "x" * 201, "é" * 256]
TEXT_POOL = [*TEXT_SMALL, BIG, HUGE]

# JSON documents (top-level None is SQL NULL; Raw("null") is JSON null)
JSON_POOL = [
    None, Raw("null"), True, False, 0, Raw("-0"), -1, 1.5, Raw("1e400"), Raw("-1e400"), Raw("1e-400"),
    Raw("1e1000000"), 2 ** 64, float("nan"), float("inf"), Raw("NaN"), Raw("-Infinity"),
    "x", "", INJECTION, Raw('"\\u0000"'), Raw('"\\ud800"'), Raw('"\\udc00\\ud800"'), Raw('"\x01"'),
    [], [None], [1, "a", None, {}], {}, {"unknownKey": 1}, {"": ""}, Raw('{"a":1,"a":2}'), {INJECTION: "$$"},
    Raw('{"\\u0000":1}'), DEEP_ARRAY, DEEP_OBJECT, TOO_DEEP, {f"k{i}": i for i in range(5000)},
    Big("x" * 100_000), {"x": HUGE}, Raw('{"a":1'), Raw("'single'"), Raw(""), Raw("  ")]
# Values for one field of a JSON object
FIELD_JUNK = [Raw("null"), True, 0, -1, 1.5, 2 ** 64, Raw("1e400"), Raw("NaN"), "", " ", [], {}, [1], {"a": 1},
              "x" * 1000, INJECTION, Raw('"\\u0000"'), DEEP_ARRAY]

EMAILS = ["ann@example.com", " Ann@Example.COM ", "a@b", "@b.co", "a@@b.co", "a b@c.de", "a@b.c\u200b",
          "x" * 250 + "@ex.com", "o'brien+$$%s{x}@example.com", '"quoted"@example.com', "ümlaut@exämple.de",
          "a@[127.0.0.1]", "a@xn--80ak6aa92e.com", "=?utf-8?q?x?=@ex.com", "';DROP_TABLE--@x.y", "a@b.c\n",
          "a@localhost", "a@1.2.3.4", "A@B.CO" + "\u0130",
          # the domain's IDNA edges: labels mapped to nothing, to other letters, bad punycode, other dots
          "a@\u00ad.com", "a@stra\u00dfe.de", "a@\uff46\uff55\uff4c\uff4c.com", "a@xn--zz.com", "a@xn--.com",
          "a@\u4f8b\u3048\u3002\u30c6\u30b9\u30c8", "a@a..b", "a@-a.com", "a.@b.co", "a@" + "a" * 64 + ".com",
          "a@\u0660\u0661.com", "a@\u05d0\u0031.com", "a@" + "\u00e9" * 70 + ".com"]


# -- the world every test starts from ----------------------------------------------------------

@dataclass
class World:
    A: uuid.UUID
    B: uuid.UUID
    oA: uuid.UUID
    aA: uuid.UUID
    mA: uuid.UUID
    oB: uuid.UUID
    aB: uuid.UUID
    mB: uuid.UUID
    promo_run: uuid.UUID  # A: executed, its messages queued or claimed
    recover_run: uuid.UUID  # A: queued
    cancelled_run: uuid.UUID  # B
    promo_preview: uuid.UUID
    claimed: list  # message ids WORKER holds
    queued: list  # message ids nobody holds
    token: str  # unsubscribe token for A / c1@ex.com
    token_b: str
    token_unknown_project: str
    policy: dict  # send_promo's policy
    cursor: dict  # a real timeline nextCursor of A
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def key(self) -> str:
        return f"hx-{next(self.counter)}"

    def user(self) -> uuid.UUID:
        return uuid.UUID(int=(0x4858 << 112) + next(self.counter))

    @property
    def ids(self) -> list:
        return [self.A, self.B, self.oA, self.aA, self.mA, self.oB, self.mB, self.promo_run, self.recover_run,
                self.cancelled_run, self.promo_preview]


def one(conn, sql: str, *params):
    return conn.execute(sql, params).fetchone()[0]


def build_world(conn) -> World:
    """Projects A and B with an owner, an admin and a member each, some events, an executed promo run
    (messages queued, three claimed by WORKER), a queued recovery run in A and a cancelled run in B."""
    users = [uuid.uuid4() for _ in range(6)]
    oA, aA, mA, oB, aB, mB = users
    A = one(conn, "SELECT runhub.create_project('Shop A', %s, 'Europe/Paris', 'EUR')", oA)
    B = one(conn, "SELECT runhub.create_project('Shop B', %s, 'America/New_York', 'USD')", oB)
    for project, owner, admin, member in ((A, oA, aA, mA), (B, oB, aB, mB)):
        # no frequency cap: the recovery run after the promo run still has recipients
        conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)",
                     (project, owner, Jsonb(SETTINGS | {"frequencyCapHours": 0})))
        conn.execute("SELECT runhub.add_member(%s, %s, %s, 'admin')", (project, owner, admin))
        conn.execute("SELECT runhub.add_member(%s, %s, %s, 'member')", (project, owner, member))

    def ingest(project, kind, email, hours, name=None, cart=None, currency="EUR"):
        body = {"type": kind, "occurredAt": iso(now() - dt.timedelta(hours=hours)),
                "idempotencyKey": uuid.uuid4().hex, "customer": {"email": email} | ({"name": name} if name else {})}
        if cart:
            body |= {"correlationId": cart, "amountCents": 4200, "currency": currency, "payload": {"cartId": cart}}
        conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(body)))

    for i, name in enumerate(["Ann", "O'Brien", INJECTION, "Zoë"]):
        ingest(A, "checkout_started", f"c{i}@ex.com", 2 + i, name=name, cart=f"cart-{i}")
    ingest(A, "user_signed_up", "s0@ex.com", 1)
    ingest(A, "user_signed_up", "s1@ex.com", 3)
    ingest(B, "checkout_started", "b0@ex.com", 1, cart="cart-b0", currency="USD")

    def preview(project, actor, action, params):
        return one(conn, "SELECT runhub.preview(%s, %s, %s, %s)", project, actor, action, Jsonb(params))["previewId"]

    def create_run(project, actor, action, key, params, preview_id):
        return one(conn, "SELECT runhub.create_run(%s, %s, %s, %s, %s, NULL, %s)",
                   project, actor, action, key, Jsonb(params), preview_id)["runId"]

    promo_preview = preview(A, oA, "send_promo", PROMO)
    promo_run = create_run(A, oA, "send_promo", "fixture-promo", PROMO, promo_preview)
    assert one(conn, "SELECT runhub.process_runs(10)") == 1
    recover_run = create_run(A, aA, "recover_abandoned", "fixture-recover", {},
                             preview(A, aA, "recover_abandoned", {}))
    cancelled_run = create_run(B, aB, "recover_abandoned", "fixture-cancelled", {},
                               preview(B, aB, "recover_abandoned", {}))
    conn.execute("SELECT runhub.cancel_run(%s, %s, %s)", (B, oB, cancelled_run))
    claimed = sorted(m["id"] for (m,) in conn.execute("SELECT * FROM runhub.claim_messages(%s, 3, 3600)", (WORKER,)))
    conn.execute("SELECT * FROM runhub.start_messages(%s, %s)", (WORKER, claimed[:1]))
    queued = [r[0] for r in conn.execute("SELECT id FROM runhub.outbox WHERE status = 'queued' ORDER BY id")]
    assert len(claimed) == 3 and queued, "the fixture's promo run must have messages to claim"
    cursor = one(conn, "SELECT runhub.list_events(%s, %s, 'timeline', NULL, 2)", A, oA)["nextCursor"]
    return World(
        A=A, B=B, oA=oA, aA=aA, mA=mA, oB=oB, aB=aB, mB=mB, promo_run=promo_run, recover_run=recover_run,
        cancelled_run=cancelled_run, promo_preview=promo_preview, claimed=claimed, queued=queued,
        token=one(conn, "SELECT runhub.unsubscribe_token(%s, 'c1@ex.com')", A),
        token_b=one(conn, "SELECT runhub.unsubscribe_token(%s, 'b0@ex.com')", B),
        token_unknown_project=one(conn, "SELECT runhub.unsubscribe_token(%s, 'c1@ex.com')", uuid.uuid4()),
        policy=one(conn, "SELECT policy FROM runhub.actions WHERE id = 'send_promo'"),
        cursor=cursor)


# -- pools and strategies per SQL type ---------------------------------------------------------

def uuid_pool(w: World) -> list:
    return [None, uuid.UUID(int=0), uuid.UUID(int=2 ** 128 - 1), uuid.UUID(int=1), *w.ids,
            str(w.A).upper(), "{" + str(w.A) + "}", str(w.A).replace("-", ""), str(w.A) + "0", " " + str(w.A),
            "not-a-uuid", "", INJECTION, "a\x00"]


INT4_POOL = [None, 0, -1, 1, 4, 5, 50, 500, 501, 1000, 1001, 3600, 3601, 86400, 86401, 2 ** 31 - 1, -2 ** 31,
             2 ** 31, -2 ** 31 - 1, 2 ** 63, 10 ** 30, 1.5, -0.5, float("nan"), float("inf"), "12abc", "1e3", " 7 "]


def int8_pool(w: World) -> list:
    return [None, 0, -1, 1, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1, float("nan"), "1e3", *w.claimed, w.queued[0]]


def tstz_pool(w: World) -> list:
    return [None, "infinity", "-infinity", "epoch", "now", "today", "294276-12-31 23:59:59.999999+00",
            "294277-01-01 00:00:00+00", "4714-11-24 00:00:00+00 BC", "4714-11-23 00:00:00+00 BC",
            "2026-13-45T00:00:00Z", "garbage", "1999-12-31T23:59:59Z", iso(now() + dt.timedelta(days=2)),
            iso(now() - dt.timedelta(hours=1)), "2026-11-20 10:00:00", INJECTION]


def date_pool(w: World) -> list:
    return [None, "infinity", "-infinity", "epoch", "today", "0001-01-01", "9999-12-31", "10000-01-01",
            "0001-01-01 BC", "4714-11-24 BC", "4714-11-23 BC", "5874897-12-31", "5874898-01-01",
            "2026-02-30", "2026-13-45", "garbage", "", " 2026-03-29", "2026-03-29 10:00+05", "20260329",
            "J2451187", "2011-12-30", INJECTION]


def int8_array_pool(w: World) -> list:
    c, q = w.claimed, w.queued
    return [None, [], [None], [c[0], None], [0, -1], [2 ** 63 - 1, -2 ** 63], [2 ** 63], [[c[0], c[1]], [q[0], 0]],
            "[0:1]={%d,%d}" % (c[0], c[1]), "{1,", "{{1},{2}}", list(range(1, 1002)), list(c), list(c) * 2,
            list(range(1, 100_001))]


def text_array_pool(w: World) -> list:
    return [None, [], [None], ["250 ok", None], [["250 a", "250 b"], ["250 c", "250 d"]], ["a\x00"], [HUGE],
            ["250 ok"] * 1001, INJECTIONS[:3], "{a,", "[0:0]={x}"]


TYPE_POOLS: dict[str, Callable[[World], list]] = {
    "text": lambda w: TEXT_POOL,
    "uuid": uuid_pool,
    "integer": lambda w: INT4_POOL,
    "bigint": int8_pool,
    "jsonb": lambda w: JSON_POOL,
    "timestamp with time zone": tstz_pool,
    "date": date_pool,
    "bigint[]": int8_array_pool,
    "text[]": text_array_pool,
    "bytea": lambda w: [None, b"", b"\x00\xff", b"x" * 100_000],
}

hostile_text = st.one_of(
    st.sampled_from(TEXT_SMALL),
    st.text(max_size=300),
    st.text(alphabet="';\"$%\\-{}()*/#\n\t \x00ab1@.", max_size=80))
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                        st.sampled_from(FIELD_JUNK))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def as_document(value):
    """A generated JSON value as a top-level document: None means JSON null here, not SQL NULL."""
    return Raw("null") if value is None else value


TYPE_STRATEGIES: dict[str, Callable[[World], st.SearchStrategy]] = {
    "text": lambda w: hostile_text,
    "uuid": lambda w: st.one_of(st.sampled_from(uuid_pool(w)), st.uuids(), st.text(max_size=40)),
    "integer": lambda w: st.one_of(st.sampled_from(INT4_POOL), st.integers(), st.integers(-10, 1100), st.floats()),
    "bigint": lambda w: st.one_of(st.sampled_from(int8_pool(w)), st.integers()),
    "jsonb": lambda w: st.one_of(
        st.sampled_from([v for v in JSON_POOL if not isinstance(v, Big) and v is not TOO_DEEP]),
        json_value.map(as_document)),
    "timestamp with time zone": lambda w: st.one_of(
        st.sampled_from(tstz_pool(w)), st.text(max_size=32),
        st.datetimes(timezones=st.just(dt.timezone.utc)).map(iso),
        st.datetimes(min_value=dt.datetime(1999, 1, 1), max_value=dt.datetime(2030, 1, 1),
                     timezones=st.just(dt.timezone.utc)).map(iso)),
    "bigint[]": lambda w: st.one_of(
        st.sampled_from(int8_array_pool(w)[:-1]),
        st.lists(st.one_of(st.none(), st.integers(), st.sampled_from(w.claimed + w.queued)), max_size=20)),
    "text[]": lambda w: st.one_of(
        st.sampled_from([v for v in text_array_pool(w) if v != [HUGE]]),
        st.lists(st.one_of(st.none(), hostile_text), max_size=8)),
    "date": lambda w: st.one_of(
        st.sampled_from(date_pool(w)), st.text(max_size=16), st.dates().map(str),
        st.dates(min_value=dt.date(1999, 1, 1), max_value=dt.date(2030, 12, 31)).map(str)),
    "bytea": lambda w: st.one_of(st.none(), st.binary(max_size=100)),
}


# -- per-argument pools and strategies (structure and meaning) ---------------------------------



def base_event(w: World) -> dict:
    return {"type": "checkout_started", "occurredAt": iso(now() - dt.timedelta(hours=1)),
            "idempotencyKey": w.key(), "correlationId": "cart-hx",
            "customer": {"email": "hx@example.com", "name": "Hx", "locale": "fr-CA"},
            "amountCents": 4200, "currency": "EUR", "payload": {"cartId": "cart-hx"}}


EVENT_FIELDS = {
    "type": ["recovery_email_sent", "promo_email_sent", "x_email_sent", "runhub_internal", "Checkout",
             "a" * 65, "checkout-started", DELETE],
    "occurredAt": ["infinity", "-infinity", "294276-12-31T23:59:59Z", "294277-01-01T00:00:00Z",
                   "2026-02-30T10:00:00Z", "0000-01-01T00:00:00Z", "2026-11-20T10:00:00+99:99",
                   "2026-11-20T10:00:00", "1999-12-31T23:59:59Z", "2026-11-20T10:00:00.1234567Z",
                   "2026-11-20T25:61:61Z", " 2026-11-20T10:00:00Z", "+12026-11-20T10:00:00Z",
                   "2026-11-20T10:00:00-00:60", "9999-12-31T23:59:59+14:00", DELETE],
    "idempotencyKey": ["mail:<x@runhub>", "MAIL:x", "Runhub:x", "x" * 256, "é" * 255, DELETE],
    "correlationId": ["x" * 256, "mail:x", DELETE],
    "customer": [*({"email": e} for e in EMAILS), {"name": "x" * 201}, {"name": " \u00a0 "}, {"locale": "fr_CA"},
                 {"locale": "x" * 36}, {"locale": "EN"}, {"email": "a@b.co", "extra": 1}, {"Email": "a@b.co"},
                 {"email": Big("a" * 100_000 + "@ex.com")}, DELETE],
    "amountCents": [2 ** 53 - 1, 2 ** 53, Raw("-0"), Raw("1.0"), Raw("1e-400"), Raw("1e1000000"), "100",
                    Raw("9007199254740991.5"), DELETE],
    "currency": ["eur", "XXX", "EURO", "€", DELETE],
    "payload": [{"x": "y" * 40_000}, {"d": DEEP_ARRAY}, {"d": TOO_DEEP}, {INJECTION: INJECTION},
                {"\u0000": 1}, {"a": Raw('"\\ud800"')}, {"x": HUGE}, DELETE],
}


def event_pool(w: World) -> list:
    pool = []
    for path, values in EVENT_FIELDS.items():
        for value in [*values, *FIELD_JUNK]:
            pool.append(Lazy(lambda p=path, v=value: with_field(base_event(w), p, v), f"event.{path}={short(value, 60)}"))
    for extra in ({"extra": 1}, {"Type": "x"}, {INJECTION: 1}, {"payload ": {}}):
        pool.append(Lazy(lambda e=extra: base_event(w) | e, f"event+{short(extra, 60)}"))
    return pool + [Raw("[]"), "checkout_started", 1, Raw("null"), {}]


@st.composite
def events(draw, w: World):
    body = base_event(w)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(["type", "occurredAt", "idempotencyKey", "correlationId", "customer",
                                     "customer.email", "customer.name", "customer.locale", "amountCents",
                                     "currency", "payload", "unknown"]))
        if path == "unknown":
            body[draw(st.text(max_size=20))] = draw(json_value)
            continue
        value = draw(st.one_of(json_value, hostile_text, st.sampled_from(EVENT_FIELDS.get(path, FIELD_JUNK)),
                               st.sampled_from(EMAILS)))
        if path.startswith("customer.") and not isinstance(body.get("customer"), dict):
            body["customer"] = {}
        body = with_field(body, path, value)
    return body


PARAM_FIELDS = {
    "subject": ["", " ", "\u00a0\u200b", "x" * 200, "x" * 201, *INJECTIONS[:4], DELETE],
    "content": ["", "x" * 20000, "x" * 20001, INJECTION, DELETE],
    "segmentation": ["recent_7d", "recent_30d", "all", "ALL", "recent_7d ", DELETE],
    "isUpdate": [True, "true", 1, DELETE],
}


def params_pool(w: World) -> list:
    pool = [with_field(PROMO, path, value) for path, values in PARAM_FIELDS.items() for value in [*values, *FIELD_JUNK]]
    return pool + [{}, PROMO | {"unknown": 1}, PROMO | {"Subject": "x"}, {"x": "y" * 40_000}, PROMO | {"x": HUGE},
                   PROMO | {INJECTION: 1}, [PROMO], Raw("null"), "send_promo"]


@st.composite
def promo_params(draw, w: World):
    params = dict(PROMO)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(st.sampled_from([*PARAM_FIELDS, "unknown"]), st.text(max_size=12)))
        params[key] = draw(st.one_of(json_value, hostile_text, st.sampled_from(PARAM_FIELDS.get(key, FIELD_JUNK))))
        if params[key] is DELETE:
            del params[key]
    return params


SETTING_FIELDS = {
    "shopUrl": ["http://a.b:99999", "javascript:alert(1)", "https://a.b/x?y=1", "https://exa mple.com",
                "https://" + "a" * 500, "https://shop.example/';DROP--", "ftp://x.y", "HTTPS://SHOP.EXAMPLE",
                "https://shop.example/\u202e"],
    "frequencyCapHours": [0, 168, 169, -1, 16.0, Raw("1e2"), Raw("16.0"), Raw("1e400"), "16", 2 ** 63, Raw("-0")],
    "integrations": [[], ["payments", "payments"], [None], "email", [1], ["PAYMENTS"], [["email"]]],
}


def settings_pool(w: World) -> list:
    pool = [{key: value} for key, values in SETTING_FIELDS.items() for value in [*values, *FIELD_JUNK]]
    return pool + [{"unknown": 1}, {"shopUrl": None}, {INJECTION: 1}, SETTINGS | {"x": HUGE}, [SETTINGS], "x"]


def cursor_pool(w: World) -> list:
    at = w.cursor["occurredAt"]
    ids = [0, -1, 1.5, "1", 2 ** 63, 10 ** 18, 10 ** 18 - 1, Raw("1e2"), Raw("1e400"), Raw("NaN"), Raw("-0"), None, []]
    ats = ["infinity", "-infinity", "294276-12-31T23:59:59Z", "1999-12-31T23:59:59Z", "2026-02-30T00:00:00Z",
           "garbage", 1, None, "x" * 1000]
    return [w.cursor, {"id": w.cursor["id"]}, *({"id": i, "occurredAt": at} for i in ids), *({"id": 5, "occurredAt": a} for a in ats),
            w.cursor | {"extra": 1}, [w.cursor], "x", {"id": 5, "occurredAt": at, INJECTION: 1}]


def filters_pool(w: World) -> list:
    values = {"actionId": ["send_promo", "SEND_PROMO", "nope"], "status": ["queued", "QUEUED", "done"],
              "limit": [1, 100, 0, 101, Raw("1e2"), Raw("1.0"), "5", 2 ** 63]}
    return [*({k: v} for k, vs in values.items() for v in [*vs, *FIELD_JUNK]), {"unknown": 1}, {INJECTION: 1}, [], "x"]


def policy_pool(w: World) -> list:
    return [w.policy, *({**w.policy, "windowHours": v} for v in FIELD_JUNK), *({**w.policy, "windowDays": v} for v in FIELD_JUNK)]


def token_pool(w: World) -> list:
    t = w.token
    flipped = t[:-1] + ("A" if t[-1] != "A" else "B")
    return [t, w.token_b, w.token_unknown_project, t[:-1], t + "A", flipped, t.upper(), t.lower(), " " + t, t + "\n",
            t.replace(".", "..", 1), t.replace(".", "=.", 1), t + "=", ".".join(reversed(t.split("."))),
            "v1." + t.split(".", 1)[1], "v2.0." + t.split(".", 2)[-1], "v2.999999999." + t.split(".", 2)[-1],
            "v2.01." + t.split(".", 2)[-1], "....", ".", "x" * 2001, Big(t * 10_000)]


ARG_POOLS: dict[str, Callable[[World], list]] = {
    "name": lambda w: ["Shop", "  Shop  ", "x" * 200, "x" * 201, "\u00a0\u200b"],
    "timezone": lambda w: ["UTC", "Europe/Paris", "EST", "localtime", "posix/Europe/Paris", "right/UTC",
                             "Europe/Paris ", "europe/paris", "+05:00", "Etc/GMT+5", "Mars/Olympus"],
    "currency": lambda w: ["EUR", "eur", "EU", "EURO", "XXX", "USD ", "€"],
    "locale": lambda w: ["en", "EN", "en-US", "ar", "xx"],
    "industry": lambda w: ["retail", "Retail", "a" * 40, "a" * 41, "-x", "x y"],
    "role": lambda w: ["owner", "admin", "member", "Owner", "superuser", "member "],
    "sort": lambda w: ["timeline", "ingestion", "TIMELINE", "ingestion "],
    "action": lambda w: ["recover_abandoned", "send_promo", "onboard_users", "SEND_PROMO", "send_promo ", "runhub_x"],
    "reason": lambda w: ["unsubscribed", "bounced", "complained", "manual", "MANUAL"],
    "exclusion": lambda w: ["converted", "alreadyContacted", "alreadyOnboarded", "suppressed", "frequencyCap", "x"],
    "email": lambda w: EMAILS,
    "worker": lambda w: [WORKER, "someone-else", "x" * 200, "x" * 201],
    "token": token_pool,
    "idempotency_key": lambda w: ["fixture-promo", "fixture-recover", "x" * 255, "x" * 256, "mail:x", "runhub:x"],
    "smtp_code": lambda w: [250, 399, 400, 421, 450, 499, 500, 550, 551, 553, 599, 600],
    "smtp_reply": lambda w: ["550 5.1.1 user unknown", "5.1.1", "452-4.2.2 full", "250 ok"],
    "max": lambda w: [0, 1, 1000, 1001],
    "hour": lambda w: [0, 2, 3, 23, 24, -1],
    "lease_seconds": lambda w: [4, 5, 3600, 3601, 86400, 86401],
    "frequency_cap_hours": lambda w: [0, 16, 168, -1],
    "id": lambda w: [*w.claimed, w.queued[0]],
    "create_project.id": lambda w: [None, w.A, w.B, uuid.uuid4(), uuid.UUID(int=0)],  # taken ids refused PT409
    "run": lambda w: [w.promo_run, w.recover_run, w.cancelled_run],
    "preview_id": lambda w: [w.promo_preview],
    "event": event_pool,
    "params": params_pool,
    "settings": settings_pool,
    "cursor": cursor_pool,
    "filters": filters_pool,
    "policy": policy_pool,
}


def arg_override(table: dict, fn, name: str, default):
    """The override for argument name of fn: "function.argument" first, then the argument's name."""
    return table.get(f"{fn.name}.{name}", table.get(name, default))


def sampled(pool_of: Callable[[World], list]) -> Callable[[World], st.SearchStrategy]:
    return lambda w: st.sampled_from([v for v in pool_of(w) if not isinstance(v, Big)])


ARG_STRATEGIES: dict[str, Callable[[World], st.SearchStrategy]] = {
    **{name: sampled(pool) for name, pool in ARG_POOLS.items()},
    "email": lambda w: st.one_of(st.sampled_from(EMAILS), st.emails().map(str), hostile_text),
    "event": lambda w: st.one_of(events(w), sampled(event_pool)(w)),
    "params": lambda w: st.one_of(promo_params(w), sampled(params_pool)(w)),
    "settings": lambda w: st.one_of(st.dictionaries(st.sampled_from([*SETTING_FIELDS, "x"]), json_value, max_size=3),
                                      sampled(settings_pool)(w)),
    "cursor": lambda w: st.one_of(st.fixed_dictionaries({"id": json_value, "occurredAt": json_value}),
                                    sampled(cursor_pool)(w)),
    "filters": lambda w: st.one_of(st.dictionaries(st.sampled_from(["actionId", "status", "limit", "x"]),
                                                     json_value, max_size=3), sampled(filters_pool)(w)),
    "ids": lambda w: st.lists(st.sampled_from([*w.claimed, *w.queued, 0, -1, None]), max_size=8),
    "replies": lambda w: st.lists(st.one_of(st.none(), hostile_text), max_size=8),
}


# -- the functions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    roles: tuple
    base: Callable[[World], dict]  # a valid call: argument name -> value
    examples: int = 30


APP, INGEST, SENDER, READER = ("runhub_app",), ("runhub_ingest",), ("runhub_sender",), ("runhub_reader",)
ANALYST = ("runhub_analyst",)
# The reader's functions take no argument: their input is the session's identity (see reader_pools).
SPECS: dict[str, Spec] = {
    "runhub.create_project(text,uuid,text,text,text,text,uuid)": Spec(APP, lambda w: dict(
        name="Hostile shop", owner=w.user(), timezone="UTC", currency="EUR", locale="en", industry=None, id=None)),
    "runhub.add_member(uuid,uuid,uuid,text)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.oA, member=w.user(), role="member")),
    "runhub.update_project_settings(uuid,uuid,jsonb)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.aA, settings={"frequencyCapHours": 16})),
    "runhub.list_events(uuid,uuid,text,jsonb,integer)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.mA, sort="timeline", cursor=None, page_size=50)),
    "runhub.list_actions(uuid,uuid)": Spec(APP, lambda w: dict(project=w.A, actor=w.mA)),
    "runhub.preview(uuid,uuid,text,jsonb)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.oA, action="send_promo", params=PROMO)),
    "runhub.create_run(uuid,uuid,text,text,jsonb,timestamp with time zone,uuid)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.oA, action="send_promo", idempotency_key=w.key(), params=PROMO,
        client_requested_at=None, preview_id=None)),
    "runhub.get_run(uuid,uuid,uuid)": Spec(APP, lambda w: dict(project=w.A, actor=w.mA, run=w.promo_run)),
    "runhub.list_runs(uuid,uuid,jsonb)": Spec(APP, lambda w: dict(project=w.A, actor=w.mA, filters={})),
    "runhub.cancel_run(uuid,uuid,uuid)": Spec(APP, lambda w: dict(project=w.B, actor=w.oB, run=w.cancelled_run)),
    "runhub.workflow_outcome(uuid,uuid,uuid)": Spec(APP, lambda w: dict(project=w.A, actor=w.mA, run=w.promo_run)),
    "runhub.action_lift(uuid,uuid,text)": Spec(APP, lambda w: dict(project=w.A, actor=w.mA, action="send_promo")),
    "runhub.platform_lift(text)": Spec(ANALYST, lambda w: dict(action="recover_abandoned"), examples=20),
    "runhub.explain_attribution(uuid,uuid,bigint)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.mA, payment_event_id=w.cursor["id"])),
    "runhub.attribution_reasons()": Spec(APP, lambda w: {}, examples=5),
    "runhub.suppress(uuid,uuid,text,text)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.aA, email="sup@example.com", reason="manual")),
    "runhub.unsubscribe(text)": Spec(APP, lambda w: dict(token=w.token)),
    "runhub.criteria_text(text,jsonb,jsonb,text)": Spec(APP, lambda w: dict(
        action="send_promo", policy=w.policy, params={"segmentation": "recent_7d"}, locale="de")),
    "runhub.exclusion_label(text,integer,text)": Spec(APP, lambda w: dict(exclusion="frequencyCap", frequency_cap_hours=16,
                                                                          locale="fr")),
    "runhub.explain_recipient(uuid,uuid,text,text,jsonb)": Spec(APP, lambda w: dict(
        project=w.A, actor=w.aA, action="send_promo", email="c1@ex.com", params=PROMO)),
    "runhub.next_digest_at(text,integer,timestamp with time zone)": Spec(APP, lambda w: dict(
        timezone="Europe/Paris", hour=9, after=iso(now()))),
    "runhub.local_day_range(date,text)": Spec(APP, lambda w: dict(day="2026-03-29", timezone="Europe/Paris")),
    "runhub.error_catalog()": Spec(APP + READER, lambda w: {}, examples=10),
    "runhub.ingest_event(uuid,jsonb)": Spec(INGEST, lambda w: dict(project=w.A, event=base_event(w)), examples=60),
    "runhub.ingest_events(uuid,jsonb)": Spec(INGEST, lambda w: dict(project=w.A, events=[base_event(w), base_event(w)]),
                                             examples=60),
    "runhub.process_runs(integer)": Spec(SENDER, lambda w: dict(max=1)),
    "runhub.claim_runs(text,integer,integer)": Spec(SENDER, lambda w: dict(worker=WORKER, max=1, lease_seconds=300)),
    "runhub.execute_run(uuid,text)": Spec(SENDER, lambda w: dict(run=w.recover_run, worker=WORKER)),
    "runhub.heartbeat_run(uuid,text,integer)": Spec(SENDER, lambda w: dict(
        run=w.recover_run, worker=WORKER, lease_seconds=300)),
    "runhub.claim_messages(text,integer,integer)": Spec(SENDER, lambda w: dict(
        worker=WORKER, max=1, lease_seconds=3600)),
    "runhub.heartbeat_messages(text,bigint[],integer)": Spec(SENDER, lambda w: dict(
        worker=WORKER, ids=w.claimed, lease_seconds=3600)),
    "runhub.release_messages(text,bigint[])": Spec(SENDER, lambda w: dict(worker="nobody", ids=w.claimed)),
    "runhub.defer_messages(text,bigint[],text)": Spec(SENDER, lambda w: dict(
        worker="nobody", ids=w.claimed, reason="relay unavailable: ConnectionRefusedError")),
    "runhub.report_relay(text,text,text)": Spec(SENDER, lambda w: dict(
        worker=WORKER, relay="127.0.0.1:25", error="SMTPConnectError: (421, b'busy')")),
    "runhub.start_messages(text,bigint[])": Spec(SENDER, lambda w: dict(worker=WORKER, ids=w.claimed[:1])),
    "runhub.record_sent(bigint,text,text)": Spec(SENDER, lambda w: dict(
        id=w.claimed[0], worker=WORKER, smtp_reply="250 ok")),
    "runhub.record_sent_many(text,bigint[],text[])": Spec(SENDER, lambda w: dict(
        worker=WORKER, ids=w.claimed[:2], replies=["250 ok", "250 ok"])),
    "runhub.record_failure(bigint,text,integer,text)": Spec(SENDER, lambda w: dict(
        id=w.claimed[1], worker=WORKER, smtp_code=450, smtp_reply="450 try later")),
    "runhub.unsubscribe_token(uuid,text)": Spec(SENDER, lambda w: dict(project=w.A, email="c1@ex.com")),
    "runhub.sender_idle()": Spec(SENDER, lambda w: {}, examples=1),
    "runhub.metrics()": Spec(SENDER, lambda w: {}, examples=5),
    "runhub.digest_batch(integer,bigint)": Spec(SENDER, lambda w: dict(max=5, job_run=None), examples=20),
    "runhub.run_due_digests(integer)": Spec(SENDER, lambda w: dict(queued=None), examples=5),
    "runhub.current_user_id()": Spec(READER, lambda w: {}, examples=60),
    "runhub._my_project_ids()": Spec(READER, lambda w: {}, examples=30),
}
CASES = [(role, signature) for signature, spec in SPECS.items() for role in spec.roles]


def reader_pools(w: World) -> dict[str, list]:
    """The reader's input: runhub.user_id (SET LOCAL by the service) and request.jwt.claims (PostgREST)."""
    o = str(w.oA)
    return {
        "runhub.user_id": ["", o, str(w.mB), o.upper(), "{" + o + "}", " " + o, o + " ", o.replace("-", ""),
                           "not-a-uuid", INJECTION, "a\x00", "a\ud800", "0" * 36, HUGE],
        "request.jwt.claims": ["", dumps({"sub": o}), dumps({"sub": str(w.mB), "role": "x"}), '{"sub": 5}',
                               '{"sub": null}', '{"sub": ["x"]}', '{"sub": {"a": 1}}', "[1]", '"s"', "5",
                               '{"sub": "\\u0000"}', '{"\\u0000": 1}', '{"sub": "\\ud800"}', '{"sub": 1e1000000}',
                               '{"sub": NaN}', "not json", str(TOO_DEEP), dumps({"sub": DEEP_ARRAY}),
                               '{"sub": "%s", "sub": "%s"}' % (w.oB, o), dumps({"sub": o, "x": HUGE}), "{"],
    }


# -- calling, and checking the properties -------------------------------------------------------

@dataclass
class Fn:
    signature: str
    name: str
    argnames: list
    argtypes: list
    volatility: str
    kind: str = "f"  # pg_proc.prokind: 'p' for a procedure (called with CALL)


def granted_functions(conn) -> dict[tuple[str, str], Fn]:
    """(role, regprocedure) -> Fn for every function of schema runhub each role may execute."""
    rows = conn.execute(
        """SELECT r.role, p.oid::regprocedure::text, p.proname::text,
                  coalesce((SELECT array_agg(n ORDER BY i) FROM unnest(p.proargnames) WITH ORDINALITY a(n, i)
                             WHERE p.proargmodes IS NULL OR p.proargmodes[i] IN ('i', 'b', 'v')), '{}'),
                  coalesce((SELECT array_agg(format_type(t, NULL) ORDER BY i)
                              FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(t, i)), '{}'),
                  p.provolatile::text, p.prokind::text
             FROM pg_proc p CROSS JOIN unnest(%s::text[]) AS r(role)
            WHERE p.pronamespace = 'runhub'::regnamespace AND has_function_privilege(r.role, p.oid, 'EXECUTE')""",
        (list(ROLES + ANALYST),)).fetchall()
    return {(role, sig): Fn(sig, name, list(names), list(types), vol, kind)
            for role, sig, name, names, types, vol, kind in rows}


def fingerprint_sql(conn) -> str:
    """Row count and checksum of every table of schema runhub, and the schema's relations."""
    tables = [r[0] for r in conn.execute(
        """SELECT c.oid::regclass::text FROM pg_class c
            WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1""")]
    parts = [f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM {t} x"
             for t in tables]
    parts.append("SELECT 'pg_class', count(*), md5(string_agg(c.relname::text, ',' ORDER BY c.relname))"
                 " FROM pg_class c WHERE c.relnamespace = 'runhub'::regnamespace")
    return " UNION ALL ".join(parts)


def error_catalog(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT key, sqlstate FROM runhub.error_catalog()").fetchall())


def login(login_as, role: str) -> psycopg.Connection:
    c = psycopg.connect(login_as(role), autocommit=True, options=SESSION_OPTIONS)
    for name in ("json", "jsonb", "timestamptz", "timestamp", "date"):  # results as text: no client-side parsing
        c.adapters.register_loader(name, TextLoader)
    return c


def describe(err: BaseException) -> str:
    if isinstance(err, psycopg.Error):
        context = (err.diag.context or "").strip().splitlines()
        return (f"{type(err).__name__} {err.sqlstate} {short(err.diag.message_primary, 200)}"
                f" | detail={short(err.diag.message_detail, 200)} | hint={short(err.diag.message_hint, 200)}"
                f" | context={short(context[-1] if context else None, 200)}")
    return f"{type(err).__name__}: {short(str(err), 200)}"


def refusal_kind(err: BaseException) -> str | None:
    """The PG_REFUSALS / CLIENT_REFUSALS entry err is, or None."""
    if isinstance(err, psycopg.Error) and err.sqlstate:
        return err.sqlstate if err.sqlstate in PG_REFUSALS else None
    name = "psycopg.DataError" if isinstance(err, psycopg.DataError) else type(err).__name__
    return name if name in CLIENT_REFUSALS and CLIENT_REFUSALS[name] in str(err) else None


def runhub_in_context(err: BaseException) -> bool:
    return isinstance(err, psycopg.Error) and "runhub" in (err.diag.context or "")


class Runner:
    """Calls one function as its role and checks properties a and b for each call."""

    def __init__(self, su: psycopg.Connection, lc: psycopg.Connection, fn: Fn, catalog: dict[str, str]):
        self.su, self.lc, self.fn, self.catalog = su, lc, fn, catalog
        casts = ", ".join(f"%s::{t}" for t in fn.argtypes)
        self.call_sql = (f"CALL runhub.{fn.name}({casts})" if fn.kind == "p"
                         else f"SELECT * FROM runhub.{fn.name}({casts})")
        self.probe_sql = ("SELECT " + ", ".join(f"(%s::{t}) IS NULL" for t in fn.argtypes)) if fn.argtypes else None
        self.fp_sql = fingerprint_sql(su)
        self.before = self.fingerprint()
        self.notices: list[tuple[str, int, str]] = []
        lc.add_notice_handler(lambda d: self.notices.append(
            (d.severity, sum(len(x or "") for x in (d.message_primary, d.message_detail, d.message_hint)),
             (d.message_primary or "")[:160])))
        self.outcomes: Counter = Counter()

    def fingerprint(self) -> dict:
        return {t: (n, h) for t, n, h in self.su.execute(self.fp_sql)}

    @staticmethod
    def render(value, sqltype: str):
        value = resolve(value)
        if sqltype in ("jsonb", "json") and value is not None:
            return dumps(value)
        return value

    def probe(self, values: list) -> BaseException | None:
        """How PostgreSQL (or psycopg) refuses these values as the parameters' types, before any runhub code."""
        if self.probe_sql is None:
            return None
        needed = any(v is not None and not isinstance(v, uuid.UUID) and not (t == "text" and sendable(v))
                     for v, t in zip(values, self.fn.argtypes))
        if not needed:
            return None
        try:
            self.su.execute(self.probe_sql, values)
        except Exception as err:  # noqa: BLE001 - psycopg.Error, or a client-side encoding error
            return err
        return None

    def before_call(self):
        if self.fn.name == "create_run":  # a fresh count for the rate limit: reach the later rules
            if self.su.execute("DELETE FROM runhub.create_run_counts").rowcount:
                self.before = self.fingerprint()  # what the call is compared with

    def call(self, values: list):
        return self.lc.execute(self.call_sql, values).fetchall()

    def run(self, args: list, label: str = "") -> list[str]:
        values = [self.render(v, t) for v, t in zip(args, self.fn.argtypes)]
        shown = ", ".join(f"{n}={short(v, 120)}" for n, v in zip(self.fn.argnames, values))
        return self.check(values, f"{self.fn.signature} [{label}] ({shown})")

    def check(self, values: list, shown: str) -> list[str]:
        expected = self.probe(values)
        self.before_call()
        self.notices.clear()
        err = None
        try:
            self.call(values)
        except Exception as e:  # noqa: BLE001 - classified below
            err = e
        if self.lc.broken or self.lc.closed:
            raise AssertionError(f"the session died: {shown}: {describe(err)}")
        after = self.fingerprint()
        wrote = after != self.before
        changed = sorted(t for t in after if after[t] != self.before.get(t)) + sorted(set(self.before) - set(after))
        self.before = after
        problems = []
        if expected is not None:
            self.outcomes[f"refused by PostgreSQL: {refusal_kind(expected) or describe(expected)}"] += 1
            if refusal_kind(expected) is None:
                problems.append(f"undocumented PostgreSQL-level refusal {describe(expected)}")
            if err is None or type(err) is not type(expected) or getattr(err, "sqlstate", None) != getattr(
                    expected, "sqlstate", None):
                problems.append(f"PostgreSQL refuses this input as {describe(expected)}, the call gave "
                                f"{describe(err) if err else 'success'}")
            elif runhub_in_context(err):
                problems.append(f"the refusal came from runhub code: {describe(err)}")
        elif err is None:
            self.outcomes["ok"] += 1
            if wrote and self.fn.volatility in ("s", "i"):
                problems.append(f"a {self.fn.volatility} function wrote: {changed}")
        elif isinstance(err, psycopg.Error) and err.sqlstate:
            self.outcomes[f"{err.sqlstate} {err.diag.message_primary}"[:80]] += 1
            problems += self.contract_problems(err)
        elif isinstance(err, RlsReadFailed):
            self.outcomes["RLS read failed"] += 1
            problems.append(str(err))
        else:
            self.outcomes[f"client error {type(err).__name__}"] += 1
            problems.append(f"an unexpected client-side error: {describe(err)}")
        if err is not None and wrote:
            problems.append(f"a refused call wrote to {changed}")
        for severity, size, text in self.notices:
            if size > LOG_BOUND:
                problems.append(f"unbounded echo: a {severity} message of {size} characters: {short(text, 120)}")
        return [f"{p}\n      call: {shown}" for p in problems]

    def contract_problems(self, err: psycopg.Error) -> list[str]:
        d = err.diag
        key, detail, hint = d.message_primary, d.message_detail, d.message_hint
        problems = []
        if not err.sqlstate.startswith("PT4"):
            return [f"internal error (not a documented PT4xx refusal): {describe(err)}"]
        if self.catalog.get(key) != err.sqlstate:
            problems.append(f"MESSAGE {key!r} is not a key of error_catalog() with SQLSTATE {err.sqlstate}")
        try:
            if not isinstance(json.loads(detail or ""), dict):
                problems.append(f"DETAIL is not a JSON object: {short(detail)}")
        except ValueError:
            problems.append(f"DETAIL is not JSON: {short(detail)}")
        if not hint:
            problems.append("no HINT")
        for name, text in (("DETAIL", detail), ("HINT", hint)):
            if text and len(text.encode()) > ECHO_BOUND:
                problems.append(f"unbounded echo: {name} of {len(text.encode())} bytes: {short(text, 120)}")
        if d.context and "runhub._raise" not in d.context:
            problems.append(f"a PT error not raised by runhub._raise: {describe(err)}")
        return problems


class RlsReadFailed(Exception):
    pass


class ReaderRunner(Runner):
    """The reader's functions take no argument: the hostile input is the session's identity
    (runhub.user_id and request.jwt.claims). Also checks that RLS shows exactly the projects of the
    user current_user_id() names."""

    SETTINGS_SQL = "SELECT set_config('runhub.user_id', %s, false), set_config('request.jwt.claims', %s, false)"

    def __init__(self, *args):
        super().__init__(*args)
        self.probe_sql = "SELECT %s::text, %s::text"

    def probe(self, values):
        if all(sendable(v) for v in values):
            return None
        try:
            self.su.execute(self.probe_sql, values)
        except Exception as err:  # noqa: BLE001
            return err
        return None

    def call(self, values):
        self.lc.execute(self.SETTINGS_SQL, values)
        rows = self.lc.execute(self.call_sql).fetchall()
        try:  # what the identity is for: reading through RLS
            user = self.lc.execute("SELECT runhub.current_user_id()").fetchone()[0]
            visible = {r[0] for r in self.lc.execute("SELECT id FROM runhub.projects")}
        except psycopg.Error as err:
            raise RlsReadFailed(f"then reading runhub.projects through RLS failed: {describe(err)}") from err
        members = {r[0] for r in self.su.execute(
            "SELECT project_id FROM runhub.project_members WHERE user_id = %s", (user,))}
        if visible != members:
            raise RlsReadFailed(f"RLS shows the projects {visible}; the user {user} is a member of {members}")
        return rows

    def run_settings(self, user_id: str, claims: str) -> list[str]:
        values = [resolve(user_id), resolve(claims)]
        return self.check(values, f"{self.fn.signature} with runhub.user_id={short(values[0])},"
                                  f" request.jwt.claims={short(values[1])}")


def summary(problems: list[str], limit_per_kind: int = 2) -> list[str]:
    """At most limit_per_kind examples of each kind of problem (its first line, sans the values)."""
    seen: Counter = Counter()
    kept = []
    for p in problems:
        kind = re.sub(r"\d+ (characters|bytes)", "N", p.split("\n", 1)[0]).split("'", 1)[0][:100]
        seen[kind] += 1
        if seen[kind] <= limit_per_kind:
            kept.append(p)
    return kept


def fuzz(runner: Runner, w: World, spec: Spec) -> list[str]:
    """The sweep (each pooled value in each argument of the base call), then hypothesis."""
    fn = runner.fn
    problems = runner.run(list(spec.base(w).values()), "base")
    problems += runner.run([None] * len(fn.argnames), "all null") if fn.argnames else []
    for position, (name, sqltype) in enumerate(zip(fn.argnames, fn.argtypes)):
        pool = TYPE_POOLS[sqltype](w) + arg_override(ARG_POOLS, fn, name, lambda w: [])(w)
        for value in pool:
            args = list(spec.base(w).values())
            args[position] = value
            problems += runner.run(args, f"{name} from the pool")

    strategies = [st.one_of(TYPE_STRATEGIES[t](w), arg_override(ARG_STRATEGIES, fn, n, lambda w: st.nothing())(w))
                  for n, t in zip(fn.argnames, fn.argtypes)]

    @st.composite
    def calls(draw):
        args = list(spec.base(w).values())
        if args:
            positions = draw(st.permutations(range(len(args))))[:draw(st.integers(1, len(args)))]
            for position in positions:
                args[position] = draw(strategies[position])
        return args

    @settings(HYPOTHESIS, max_examples=spec.examples)
    @given(calls())
    def generated(args):
        found = runner.run(args, "generated")
        assert not found, "\n".join(found)

    try:
        generated()
    except Exception as err:  # noqa: BLE001 - AssertionError, or hypothesis's own report of one
        problems.append(f"hypothesis: {err}")
    return problems


# -- the tests ------------------------------------------------------------------------------------

def test_every_granted_function_has_a_strategy(conn):
    """SPECS covers exactly what the roles may execute: a function granted later fails here until it
    gets a base call (and its argument types and names have pools and strategies)."""
    granted = granted_functions(conn)
    missing = sorted(f"{role}: {sig}" for role, sig in granted if (role, sig) not in CASES)
    stale = sorted(f"{role}: {sig}" for role, sig in CASES if (role, sig) not in granted)
    assert not missing, ("granted but not fuzzed: add an entry to SPECS in tests/db/test_hostile_input.py "
                         f"(a valid base call; pools for new argument types): {missing}")
    assert not stale, f"SPECS lists functions these roles may not execute (signature changed?): {stale}"
    for fn in granted.values():
        assert set(fn.argtypes) <= set(TYPE_POOLS) and set(fn.argtypes) <= set(TYPE_STRATEGIES), \
            f"{fn.signature}: add TYPE_POOLS and TYPE_STRATEGIES entries for {set(fn.argtypes) - set(TYPE_POOLS)}"


@pytest.mark.parametrize("role,signature", CASES, ids=[f"{r.removeprefix('runhub_')}-{s.split('(')[0].removeprefix('runhub.')}"
                                                        for r, s in CASES])
def test_hostile_input(conn, login_as, role, signature):
    fn = granted_functions(conn).get((role, signature))
    if fn is None:
        pytest.fail(f"{role} may not execute {signature}: see test_every_granted_function_has_a_strategy")
    spec = SPECS[signature]
    w = build_world(conn)
    assert list(spec.base(w)) == fn.argnames, f"SPECS[{signature!r}] names {list(spec.base(w))}, not {fn.argnames}"
    tables = set(fingerprint_sql(conn).split(" UNION ALL "))
    with login(login_as, role) as lc:
        if role == "runhub_reader":
            runner = ReaderRunner(conn, lc, fn, error_catalog(conn))
            problems = reader_fuzz(runner, w, spec)
        else:
            runner = Runner(conn, lc, fn, error_catalog(conn))
            problems = fuzz(runner, w, spec)
    assert set(fingerprint_sql(conn).split(" UNION ALL ")) >= tables, "a table of schema runhub is gone"
    print(f"\n{role} {signature}: {sum(runner.outcomes.values())} calls: {dict(runner.outcomes.most_common())}")
    if problems:
        pytest.fail(f"{len(problems)} problem(s); the first of each kind:\n  " + "\n  ".join(summary(problems)),
                    pytrace=False)


def reader_fuzz(runner: ReaderRunner, w: World, spec: Spec) -> list[str]:
    pools = reader_pools(w)
    problems = runner.run_settings(str(w.oA), "")
    for value in pools["runhub.user_id"]:
        problems += runner.run_settings(value, "")
    for value in pools["request.jwt.claims"]:
        problems += runner.run_settings("", value)

    @settings(HYPOTHESIS, max_examples=spec.examples)
    @given(st.one_of(st.sampled_from([v for v in pools["runhub.user_id"] if not isinstance(v, Big)]), hostile_text,
                     st.uuids().map(str)),
           st.one_of(st.sampled_from([v for v in pools["request.jwt.claims"] if len(v) < 10_000]),
                     hostile_text, json_value.map(dumps), st.fixed_dictionaries({"sub": json_value}).map(dumps)))
    def generated(user_id, claims):
        found = runner.run_settings(user_id or "", claims or "")
        assert not found, "\n".join(found)

    try:
        generated()
    except Exception as err:  # noqa: BLE001
        problems.append(f"hypothesis: {err}")
    return problems


# -- c. injection text stored as data comes back unchanged ---------------------------------------

injection_text = st.one_of(
    st.sampled_from(INJECTIONS + UNICODE[:3]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=60),
    st.text(alphabet="';\"$%\\-{}()*/#\n\t :", min_size=1, max_size=60))


def test_injection_text_round_trips(conn, login_as):
    """Text that looks like SQL, format strings or markup goes in through the API as data (a project
    name, an event's customer name, payload and correlation id, a promo's subject and content, a
    suppressed address) and comes back byte-identical through list_events, preview, get_run, the
    sender's claim and the reader's tables; every table is still there afterwards."""
    tables = {r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'runhub'::regnamespace AND relkind IN ('r', 'p')")}
    app, webhook, sender, reader = (login(login_as, role) for role in ROLES)
    counter = itertools.count()

    def call(c, sql, *params):
        return c.execute(sql, params).fetchone()[0]

    @settings(HYPOTHESIS, max_examples=40)
    @given(injection_text, injection_text)
    def round_trip(text, other):
        n = next(counter)
        owner = uuid.uuid4()
        # Names are trimmed: bracket them so that the text's own edges come back as they went in.
        name = f"[{text[:150]}]"
        project = call(app, "SELECT runhub.create_project(%s, %s, 'UTC', 'EUR')", name, owner)
        call(app, "SELECT runhub.update_project_settings(%s, %s, %s)", project, owner, Jsonb(SETTINGS))
        event = {"type": "checkout_started", "occurredAt": iso(now() - dt.timedelta(hours=1)),
                 "idempotencyKey": f"k-{text[:200]}", "correlationId": text[:255],
                 "customer": {"email": f"c{n}@example.com", "name": name},
                 "amountCents": 1234, "currency": "EUR",
                 "payload": {text: other, "cartId": f"cart-{n}", "nested": [text, {other: text}]}}
        inserted = json.loads(call(webhook, "SELECT runhub.ingest_event(%s, %s)", project, dumps(event)))
        assert inserted["inserted"] is True
        page = json.loads(call(app, "SELECT runhub.list_events(%s, %s, 'ingestion', NULL, 10)", project, owner))
        got = page["events"][0]
        assert (got["idempotencyKey"], got["correlationId"], got["customer"]["name"], got["payload"]) == (
            event["idempotencyKey"], event["correlationId"], name, event["payload"])

        params = {"subject": f"[{text[:190]}]", "content": f"[{other}]"}
        shown = json.loads(call(app, "SELECT runhub.preview(%s, %s, 'send_promo', %s)", project, owner, dumps(params)))
        assert shown["params"]["subject"] == params["subject"] and shown["params"]["content"] == params["content"]
        assert [s["name"] for s in shown["sample"]] == [name]
        run = json.loads(call(app, "SELECT runhub.create_run(%s, %s, 'send_promo', %s, %s, NULL, %s)",
                              project, owner, f"run-{text[:200]}", dumps(params), shown["previewId"]))["runId"]
        assert json.loads(call(app, "SELECT runhub.get_run(%s, %s, %s)", project, owner, run))["params"] == \
            params | {"segmentation": "recent_30d", "isUpdate": False}
        assert call(sender, "SELECT runhub.process_runs(10)") >= 1
        claimed = [json.loads(m) for (m,) in sender.execute("SELECT * FROM runhub.claim_messages(%s, 100, 3600)",
                                                            (f"rt-{n}",))]
        mine = [m for m in claimed if m["runId"] == run]
        assert len(mine) == 1, claimed
        assert {k: mine[0]["variables"][k] for k in ("projectName", "customerName", "subject", "content")} == {
            "projectName": name, "customerName": name, "subject": params["subject"], "content": params["content"]}

        email = f"o'brien+$$%s{{x}}-{n}@example.com"
        app.execute("SELECT runhub.suppress(%s, %s, %s, 'manual')", (project, owner, email))
        reader.execute("SELECT set_config('runhub.user_id', %s, false)", (str(owner),))
        assert reader.execute("SELECT name FROM runhub.projects").fetchall() == [(name,)]
        assert reader.execute("SELECT email FROM runhub.suppressions").fetchall() == [(email,)]
        assert {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'runhub'::regnamespace AND relkind IN ('r', 'p')")} == tables

    try:
        round_trip()
    finally:
        for c in (app, webhook, sender, reader):
            c.close()


# -- the one exception: what PostgreSQL refuses before runhub code runs ---------------------------

def _pg_cases():
    """(role, SQL, params, expected): one case of each refusal in PG_REFUSALS and CLIENT_REFUSALS."""
    A = "{A}"  # replaced by project A's id
    ok_event = {"type": "checkout_started", "occurredAt": "2026-11-20T10:00:00Z", "idempotencyKey": "k"}
    ingest = "SELECT runhub.ingest_event(%s::uuid, %s::jsonb)"
    return [
        ("runhub_app", "SELECT runhub.create_project(%s::text, %s::uuid, 'UTC', 'EUR')", ["a\x00b", "{owner}"],
         "psycopg.DataError"),
        ("runhub_app", "SELECT runhub.create_project(%s::text, %s::uuid, 'UTC', 'EUR')", ["a\ud800b", "{owner}"],
         "UnicodeEncodeError"),
        ("runhub_ingest", ingest, [A, dumps(ok_event | {"payload": {"a": "\x00"}})], "22P05"),
        ("runhub_ingest", ingest, [A, dumps(ok_event | {"payload": {"a": Raw('"\\ud800"')}})], "22P02"),
        ("runhub_ingest", ingest, [A, dumps(ok_event | {"amountCents": float("nan"), "currency": "EUR"})], "22P02"),
        ("runhub_ingest", ingest, [A, dumps(ok_event | {"payload": {"d": TOO_DEEP}})], "54001"),
        ("runhub_ingest", ingest, [A, dumps(ok_event | {"amountCents": Raw("1e1000000"), "currency": "EUR"})], "22003"),
        ("runhub_ingest", ingest, ["not-a-uuid", dumps(ok_event)], "22P02"),
        ("runhub_app", "SELECT runhub.list_events(%s::uuid, %s::uuid, 'timeline', NULL, %s::integer)",
         [A, "{owner}", 2 ** 31], "22003"),
        ("runhub_app", "SELECT runhub.create_run(%s::uuid, %s::uuid, 'send_promo', 'k', '{}', %s::timestamptz, NULL)",
         [A, "{owner}", "294277-01-01 00:00:00+00"], "22008"),
        ("runhub_app", "SELECT runhub.create_run(%s::uuid, %s::uuid, 'send_promo', 'k', '{}', %s::timestamptz, NULL)",
         [A, "{owner}", "garbage"], "22007"),
        ("runhub_sender", "SELECT runhub.heartbeat_messages('w', %s::bigint[], 60)", [[2 ** 63]], "22003"),
        ("runhub_sender", "SELECT * FROM runhub.record_sent_many('w', %s::bigint[], '{}')", ["{1,"], "22P02"),
        ("runhub_reader", "SELECT set_config('runhub.user_id', %s, false)", ["a\x00"], "psycopg.DataError"),
    ]


@pytest.mark.parametrize("role,sql,params,expected", _pg_cases(),
                         ids=[f"{i}-{case[3]}" for i, case in enumerate(_pg_cases())])
def test_postgresql_refuses_before_runhub_code(conn, login_as, role, sql, params, expected):
    """The contract's one exception, each case exactly: the client-side error, or the SQLSTATE
    PostgreSQL raises converting the parameter, with no runhub function in its context, and nothing
    written."""
    owner = uuid.uuid4()
    project = one(conn, "SELECT runhub.create_project('Shop', %s, 'UTC', 'EUR')", owner)
    params = [str(project) if p == "{A}" else str(owner) if p == "{owner}" else p for p in params]
    fp = fingerprint_sql(conn)
    before = conn.execute(fp).fetchall()
    with login(login_as, role) as lc, pytest.raises(Exception) as excinfo:
        lc.execute(sql, params)
    assert refusal_kind(excinfo.value) == expected, describe(excinfo.value)
    assert not runhub_in_context(excinfo.value), describe(excinfo.value)
    assert conn.execute(fp).fetchall() == before
