"""Preview and execution agree: for random event histories, each action's preview (count, sample,
exclusion counts, blocked) is exactly what executing the run then writes (recipients and outbox
messages), and both match an independent model of the recipient rules in docs/sql-contract.md.

Histories are stamped in whole hours before now, chosen away from every window edge (24 h, 7 and 30
days, the frequency caps), so the few milliseconds between preview and execution never matter."""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as hevent
from hypothesis import strategies as st

from psycopg.types.json import Jsonb

from helpers.db import assert_refused, ingest
from helpers.workflows import (PROMO, SETTINGS, ago, checkout, create_run, outbox, preview, process_runs, ready_shop,
                               recipients, runs_of)
from runhub_loader.constants import ACTION_IDS

ACTIONS = list(ACTION_IDS)
EXCLUSIONS = {"recover_abandoned": ["converted", "alreadyContacted", "suppressed", "frequencyCap"],
              "send_promo": ["suppressed", "frequencyCap"],
              "onboard_users": ["alreadyOnboarded", "suppressed", "frequencyCap"]}
EVENT_HOURS = [1, 5, 12, 20, 30, 100, 200, 400, 1000]  # none on an edge: 24, 168, 720
MAILED_HOURS = [2, 10, 20, 40]                          # none on a cap: 0, 5, 16, 30
CAPS = [None, 0, 5, 30]                                 # None: the default, 16 hours
WINDOWS = {"recent_7d": 168, "recent_30d": 720, "all": float("inf")}
SHOPS = ["https://shop.example", "https://shop.example/", "http://shop.example:8080/store"]


# -- the generated history ---------------------------------------------------------------------

RECENT_HOURS = [h for h in EVENT_HOURS if h < 24]
event_st = st.one_of(
    st.tuples(st.just("checkout"), st.sampled_from(RECENT_HOURS), st.sampled_from(["corr", "payload", "both", "none"])),
    st.tuples(st.just("checkout"), st.sampled_from(EVENT_HOURS), st.sampled_from(["corr", "payload", "both", "none"])),
    # a payment by e-mail, by the correlation id of one of their checkouts (no e-mail), or both
    st.tuples(st.just("payment"), st.sampled_from(EVENT_HOURS[:6]), st.sampled_from(["email", "corr", "both"]),
              st.integers(0, 3)),
    st.tuples(st.just("signup"), st.sampled_from(EVENT_HOURS)),
    st.tuples(st.just("signup"), st.sampled_from(RECENT_HOURS)),
    st.tuples(st.just("visit"), st.sampled_from(EVENT_HOURS)),
    st.tuples(st.just("sent"), st.sampled_from(EVENT_HOURS)),  # one of our own sends: not customer activity
)
mail_st = st.tuples(st.sampled_from(MAILED_HOURS), st.sampled_from(["queued", "sent", "failed", "cancelled"]),
                    st.sampled_from(ACTIONS), st.integers(-1, 2))
customer_st = st.fixed_dictionaries({
    # a dot-atom (the address is f"{local}.{i}@ex.com"): no leading, trailing or doubled dot, which ingest refuses
    "local": st.text(alphabet="abcXYZ09._+-", min_size=1, max_size=4).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s),
    "pad": st.booleans(),
    "name": st.sampled_from([None, "Ann", "Bob", "Zoë"]),
    "events": st.lists(event_st, min_size=1, max_size=4),
    "suppressed": st.sampled_from([False, False, False, True]),
    # earlier workflow mail: (hours ago, recipient status, action, which of their carts or -1 for none)
    "mailed": st.one_of(st.just([]), st.just([]), st.lists(mail_st, min_size=1, max_size=2)),
})
history_st = st.fixed_dictionaries({
    "customers": st.lists(customer_st, max_size=14),
    "cap": st.sampled_from(CAPS),
    "shop": st.sampled_from(SHOPS),
    "order": st.permutations(ACTIONS),
    "segmentation": st.sampled_from(list(WINDOWS)),
    "is_update": st.booleans(),
})


@dataclass
class Ev:
    kind: str            # checkout_started, payment_succeeded, user_signed_up, page_viewed, recovery_email_sent
    hours: int
    idx: int             # ingestion order
    email: str | None
    corr: str | None = None
    cart: str | None = None


@dataclass
class Mail:
    email: str
    hours: float         # 0: just now (a run executed in this example)
    status: str
    action: str
    cart: str | None


@dataclass
class World:
    project: uuid.UUID
    owner: uuid.UUID
    cap: int
    shop: str
    events: list[Ev] = field(default_factory=list)
    suppressed: set[str] = field(default_factory=set)
    mail: list[Mail] = field(default_factory=list)
    names: dict[str, str | None] = field(default_factory=dict)


def _build(conn, hist) -> World:
    settings_ = dict(SETTINGS, shopUrl=hist["shop"])
    if hist["cap"] is not None:
        settings_["frequencyCapHours"] = hist["cap"]
    project, owner = ready_shop(conn, settings=settings_)
    w = World(project, owner, 16 if hist["cap"] is None else hist["cap"], hist["shop"])
    base = dt.datetime.now(dt.timezone.utc)
    mailed = []
    for i, c in enumerate(hist["customers"]):
        email = f"{c['local']}.{i}@ex.com".lower()
        sent_as = f" {c['local']}.{i}@Ex.com\t" if c["pad"] else email
        customer = {"email": sent_as} | ({"name": c["name"]} if c["name"] else {})
        w.names[email] = c["name"]
        carts = []
        for j, e in enumerate(c["events"]):
            kind, hours = e[0], e[1]
            body = {"occurredAt": (base - dt.timedelta(hours=hours)).isoformat(),
                    "idempotencyKey": f"e{i}-{j}", "customer": customer}
            ev = Ev(kind, hours, len(w.events), email)
            if kind == "checkout":
                ev.kind = body["type"] = "checkout_started"
                mode = e[2]
                if mode in ("corr", "both"):
                    ev.corr = body["correlationId"] = f"cart-{i}-{j}" if mode == "corr" else f"corr-{i}-{j}"
                if mode in ("payload", "both"):
                    body["payload"] = {"cartId": f"cart-{i}-{j}"}
                ev.cart = f"cart-{i}-{j}" if mode != "none" else None
                body |= {"amountCents": 1000 + j, "currency": "EUR"}
                carts.append(ev)
            elif kind == "payment":
                ev.kind = body["type"] = "payment_succeeded"
                mode, which = e[2], e[3]
                target = carts[which % len(carts)] if carts else None
                if mode in ("corr", "both"):
                    ev.corr = body["correlationId"] = (target.corr if target and target.corr else f"none-{i}-{j}")
                if mode == "corr":
                    del body["customer"]
                    ev.email = None
                body |= {"amountCents": 1000, "currency": "EUR"}
            else:
                ev.kind = body["type"] = {"signup": "user_signed_up", "visit": "page_viewed",
                                          "sent": "recovery_email_sent"}[kind]
            if kind == "sent":  # runhub's own send: written as record_sent writes it (clients may not ingest it)
                conn.execute("INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key,"
                             " customer_email, customer_name) VALUES (%s, %s, %s, %s, %s, %s)",
                             (project, body["type"], body["occurredAt"], f"mail:<e{i}-{j}@runhub>", email, c["name"]))
            else:
                ingest(conn, project, body)
            w.events.append(ev)
        if c["suppressed"]:
            conn.execute("SELECT runhub.suppress(%s, %s, %s, 'unsubscribed')", (project, owner, sent_as.upper()))
            w.suppressed.add(email)
        for hours, status, action, which in c["mailed"]:
            cart = carts[which % len(carts)].cart if which >= 0 and carts else None
            if not any(m.email == email and (m.action, m.hours) == (action, hours) for m in mailed):
                mailed.append(Mail(email, hours, status, action, cart))
    _earlier_runs(conn, w, mailed, base)
    return w


def _earlier_runs(conn, w, mailed, base):
    """Earlier runs, executed hours ago (one per action and hour), that mailed these customers."""
    runs = {}
    for m in mailed:
        key = (m.action, m.hours)
        if key not in runs:
            at = base - dt.timedelta(hours=m.hours)
            runs[key] = conn.execute(
                "INSERT INTO runhub.workflow_runs (project_id, action_id, status, requested_at, started_at,"
                " executed_at, completed_at, idempotency_key, params, result, triggered_by, triggered_by_role)"
                " VALUES (%s, %s, 'succeeded', %s, %s, %s, %s, %s, '{}', '{}', %s, 'owner') RETURNING id",
                (w.project, m.action, at, at, at, at, f"earlier-{m.action}-{m.hours}", w.owner)).fetchone()[0]
        conn.execute("INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, cart_id, status,"
                     " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (runs[key], w.project, m.email, m.cart, m.status, base - dt.timedelta(hours=m.hours),
                      base - dt.timedelta(hours=m.hours)))
        w.mail.append(m)


# -- the model: docs/sql-contract.md, "One recipient builder" ----------------------------------

def _model(w: World, action: str, segmentation: str):
    """(recipients in e-mail order with their cart, {exclusion: count}, blocked reason or None,
    {audience member: the exclusion that leaves them out, or None})."""
    by_email: dict[str, list[Ev]] = {}
    for e in w.events:
        if e.email:
            by_email.setdefault(e.email, []).append(e)
    live = [m for m in w.mail if m.status in ("queued", "sent")]
    audience = {}  # email -> (cart, exclusion-checking facts)
    if action == "recover_abandoned":
        for email, evs in by_email.items():
            # only checkouts with a cart id: without one a recovery mail has nothing to link back to
            recent = [e for e in evs if e.kind == "checkout_started" and e.hours < 24 and e.cart]
            if recent:
                audience[email] = max(recent, key=lambda e: (-e.hours, e.idx))
    elif action == "send_promo":
        for email, evs in by_email.items():
            seen = [e.hours for e in evs if e.kind != "recovery_email_sent"]
            if seen and min(seen) < WINDOWS[segmentation]:
                audience[email] = None
    else:
        for email, evs in by_email.items():
            signups = [e.hours for e in evs if e.kind == "user_signed_up"]
            engaged = [e.hours for e in evs if e.kind not in ("user_signed_up", "recovery_email_sent")]
            if signups and min(signups) < 168 and (not engaged or min(engaged) >= min(signups)):
                audience[email] = None

    def excluded(email, checkout):
        for rule in EXCLUSIONS[action]:
            if rule == "converted" and (
                    any(e.kind == "payment_succeeded" and e.email == email and e.hours <= checkout.hours
                        for e in w.events)
                    or any(e.kind == "payment_succeeded" and checkout.corr and e.corr == checkout.corr
                           and e.hours <= checkout.hours for e in w.events)):
                return rule
            if rule == "alreadyContacted" and checkout.cart and any(
                    m.email == email and m.cart == checkout.cart for m in live):
                return rule
            if rule == "alreadyOnboarded" and any(m.email == email and m.action == "onboard_users" for m in live):
                return rule
            if rule == "suppressed" and email in w.suppressed:
                return rule
            if rule == "frequencyCap" and any(m.email == email and m.hours < w.cap for m in live):
                return rule
        return None

    counts = dict.fromkeys(EXCLUSIONS[action], 0)
    chosen = []
    verdicts = {}
    for email in sorted(audience):
        why = verdicts[email] = excluded(email, audience[email])
        if why:
            counts[why] += 1
        else:
            chosen.append((email, audience[email].cart if audience[email] else None))

    if action == "recover_abandoned":
        unmet = not any(e.kind == "checkout_started" for e in w.events) and "workflows.requires.events"
    elif action == "send_promo":
        unmet = not any(min([e.hours for e in evs if e.kind != "recovery_email_sent"] or [10 ** 9]) < 720
                        for evs in by_email.values()) and "workflows.requires.recipients"
    else:
        unmet = not any(e.kind == "user_signed_up" for e in w.events) and "workflows.requires.events"
    blocked = unmet or (None if chosen else "workflows.policy.noRecipients")
    return chosen, counts, blocked, verdicts


def _busy_customer(i):
    mode = ["corr", "payload", "both", "none"][i % 4]
    events = [("checkout", [20, 5, 1][i % 3], mode), ("signup", [1, 100, 1][i % 3])]
    if i % 5 == 0:
        events.append(("payment", 1, ["email", "corr", "both"][i % 3], 0))
    if i % 4 == 1:
        events.insert(0, ("checkout", 5, "corr"))  # two checkouts at the same hour: the later one wins
    return {"local": "xYz"[i % 3] + str(i), "pad": i % 2 == 0, "name": [None, "Ann"][i % 2], "events": events,
            "suppressed": i == 7, "mailed": [(10, "sent", "recover_abandoned", 0)] if i in (3, 8) else []}


# Enough of everything that every sample is cut at five (no frequency cap) ...
BUSY_SHOP = {"customers": [_busy_customer(i) for i in range(14)], "cap": 0, "shop": SHOPS[1],
             "order": ["onboard_users", "recover_abandoned", "send_promo"], "segmentation": "all", "is_update": True}
# ... and the same shop where each run caps the next ones.
BUSY_CAPPED_SHOP = BUSY_SHOP | {"cap": None, "order": ["recover_abandoned", "onboard_users", "send_promo"]}


# -- the property ------------------------------------------------------------------------------

def _sample_of(rows):
    return [{"email": r[0]} | ({"name": r[1]} if r[1] is not None else {}) for r in rows[:5]]


def _check_action(conn, w: World, action: str, params: dict):
    expected, excluded_counts, blocked, _ = _model(w, action, params.get("segmentation", "recent_30d"))
    # "E-mail order" is the database's collation: let it order the model's recipients too.
    carts = dict(expected)
    expected = [(e, carts[e]) for e in conn.execute(
        "SELECT coalesce(array_agg(e ORDER BY e), '{}') FROM unnest(%s::text[]) e", ([e for e, _ in expected],)
    ).fetchone()[0]]
    p = preview(conn, w.project, w.owner, action, params)
    # coverage, shown by --hypothesis-show-statistics
    hevent(f"{action}: {blocked or ('over 5 recipients' if len(expected) > 5 else f'{len(expected)} recipients')}")
    for rule in (rule for rule, n in excluded_counts.items() if n):
        hevent(f"{action}: someone excluded as {rule}")
    assert {x["exclusion"]: x["count"] for x in p["excluded"]} == excluded_counts, (action, p["excluded"])
    assert p["count"] == len(expected), (action, p, expected)
    assert [s["email"] for s in p["sample"]] == [e for e, _ in expected[:5]]

    if blocked:
        assert p.get("blocked", {}).get("reason") == blocked, (action, p)
        runs_before = runs_of(conn, w.project)
        with pytest.raises(psycopg.Error) as exc:
            create_run(conn, w.project, w.owner, action, f"run-{action}", params)
        assert_refused(exc, "PT422", blocked)
        assert runs_of(conn, w.project) == runs_before
        return
    assert "blocked" not in p, (action, p)

    run = create_run(conn, w.project, w.owner, action, f"run-{action}", params)["runId"]
    assert process_runs(conn) == 1
    rows = recipients(conn, run)
    messages = outbox(conn, run)
    # What the preview promised is what execution wrote.
    assert p["count"] == len(rows) == len(messages)
    assert p["sample"] == _sample_of(rows)
    assert [r[0] for r in rows] == [e for e, _ in expected]
    assert [m[0] for m in messages] == [r[0] for r in rows]
    assert [m[4] for m in messages] == [r[0] for r in rows], "each message belongs to its recipient"
    assert len({m[3] for m in messages}) == len(messages)
    template = {"recover_abandoned": "recovery", "onboard_users": "onboarding",
                "send_promo": "update" if params.get("isUpdate") else "promo"}[action]
    assert {m[1] for m in messages} <= {"queued"} and {m[2] for m in messages} <= {template}
    if action == "recover_abandoned":
        base = w.shop.rstrip("/")
        links = [r[3] for r in rows]
        assert links == [f"{base}/checkout?wid={run}&cart={cart or ''}" for _, cart in expected]
    elif action == "send_promo":  # promotions link to the shop with their run id (for attribution)
        assert {r[3] for r in rows} <= {f"{w.shop.rstrip('/')}/?wid={run}"}
    else:
        assert {r[3] for r in rows} <= {None}
    # This run is now earlier workflow mail for the actions that follow.
    w.mail.extend(Mail(e, 0, "queued", action, cart) for e, cart in expected)


@pytest.mark.slow  # ~11 s: hypothesis, 300 shop histories
@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(hist=history_st)
@example(hist=BUSY_SHOP)
@example(hist=BUSY_CAPPED_SHOP)
def test_preview_is_what_execution_writes(conn, hist):
    w = _build(conn, hist)
    for action in hist["order"]:
        params = PROMO | {"segmentation": hist["segmentation"], "isUpdate": hist["is_update"]} \
            if action == "send_promo" else {}
        _check_action(conn, w, action, params)


# -- recovery links ----------------------------------------------------------------------------

@pytest.mark.parametrize("shop,base", [("https://shop.example", "https://shop.example"),
                                       ("https://shop.example/", "https://shop.example"),
                                       ("http://shop.example:8080/store/", "http://shop.example:8080/store")])
def test_recovery_link_is_shop_checkout_with_run_and_cart(conn, shop, base):
    project, owner = ready_shop(conn, settings=dict(SETTINGS, shopUrl=shop))
    checkout(conn, project, "ann@ex.com", cart="cart-123")
    checkout(conn, project, "bob@ex.com", cart="basket-9", correlation="corr-9")
    ingest(conn, project, {"type": "checkout_started", "occurredAt": dt.datetime.now(dt.timezone.utc).isoformat(),
                           "idempotencyKey": "c3", "correlationId": "corr-only", "customer": {"email": "cy@ex.com"}})
    preview(conn, project, owner, "recover_abandoned")
    run = create_run(conn, project, owner, "recover_abandoned", "k")["runId"]
    assert process_runs(conn) == 1
    assert [(r[0], r[3]) for r in recipients(conn, run)] == [
        ("ann@ex.com", f"{base}/checkout?wid={run}&cart=cart-123"),
        ("bob@ex.com", f"{base}/checkout?wid={run}&cart=basket-9"),   # payload.cartId wins
        ("cy@ex.com", f"{base}/checkout?wid={run}&cart=corr-only")]   # else the correlation id
    assert [m[4] for m in outbox(conn, run)] == [r[0] for r in recipients(conn, run)]


@pytest.mark.parametrize("cart", ["a&b=c", "50%off", "x#y", "a+b", "a b", "a/b?c"])
def test_recovery_link_carries_any_cart_id_intact(conn, cart):
    """The shop reads the cart back from the link's query string: it must decode to the same id."""
    project, owner = ready_shop(conn)
    checkout(conn, project, "ann@ex.com", cart=cart, correlation="corr-1")
    preview(conn, project, owner, "recover_abandoned")
    run = create_run(conn, project, owner, "recover_abandoned", "k")["runId"]
    assert process_runs(conn) == 1
    link = recipients(conn, run)[0][3]
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("https", "shop.example", "/checkout", "")
    assert " " not in link, f"a URL has no raw spaces: {link!r}"
    assert parse_qs(parts.query, strict_parsing=True) == {"wid": [run], "cart": [cart]}, link


# -- execution reads fresh data ----------------------------------------------------------------

def test_an_address_suppressed_after_the_preview_gets_nothing_and_later_suppression_cancels(conn):
    project, owner = ready_shop(conn)
    for email in ("ann@ex.com", "bob@ex.com", "cy@ex.com"):
        checkout(conn, project, email)
    assert preview(conn, project, owner, "recover_abandoned")["count"] == 3
    run = create_run(conn, project, owner, "recover_abandoned", "k")["runId"]
    conn.execute("SELECT runhub.suppress(%s, %s, %s, 'unsubscribed')", (project, owner, " BOB@ex.com "))
    assert process_runs(conn) == 1
    assert [r[0] for r in recipients(conn, run)] == ["ann@ex.com", "cy@ex.com"]

    # Suppressed once written: the queued message and its recipient are cancelled, nobody else's.
    other, other_owner = ready_shop(conn)
    checkout(conn, other, "ann@ex.com")
    preview(conn, other, other_owner, "recover_abandoned")
    other_run = create_run(conn, other, other_owner, "recover_abandoned", "k")["runId"]
    assert process_runs(conn) == 1
    conn.execute("SELECT runhub.suppress(%s, %s, %s, 'bounced')", (project, owner, "ann@ex.com"))
    assert [(r[0], r[2]) for r in recipients(conn, run)] == [("ann@ex.com", "cancelled"), ("cy@ex.com", "queued")]
    assert [(m[0], m[1]) for m in outbox(conn, run)] == [("ann@ex.com", "cancelled"), ("cy@ex.com", "queued")]
    assert [(m[0], m[1]) for m in outbox(conn, other_run)] == [("ann@ex.com", "queued")]


# -- the sample of a big shop: the first five included, whatever their spread ------------------

@pytest.mark.parametrize("recent", [
    [5, 6, 7, 8, 9, 10],              # dense: the first window of customers holds five
    [5, 100, 350, 351, 520, 590],     # sparse: it holds two, the rest comes from all of them
    [599],                            # one
    [255, 256, 257, 258, 259, 261],   # across the window's edge
])
def test_the_sample_of_a_big_audience_is_its_first_five_in_email_order(conn, recent):
    """600 customers (more than the sample's first window of 256): those seen this week make
    send_promo recent_7d's audience; one of them suppressed. The sample is the first five included
    in e-mail order, as a plain read of the builder says."""
    project, owner = ready_shop(conn)
    emails = [f"a{i:03d}@ex.com" for i in range(600)]
    events = [{"type": "lead_created", "occurredAt": ago(24 * (1 if i in recent else 40)),
               "idempotencyKey": f"lead-{i}", "customer": {"email": e}} for i, e in enumerate(emails)]
    conn.execute("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(events)))
    if len(recent) > 1:
        conn.execute("SELECT runhub.suppress(%s, %s, %s, 'manual')", (project, owner, emails[recent[1]]))
    params = PROMO | {"segmentation": "recent_7d"}
    p = preview(conn, project, owner, "send_promo", params)
    full = conn.execute("SELECT runhub._workflow_params('send_promo', %s)", (Jsonb(params),)).fetchone()[0]
    first_five = [r[0] for r in conn.execute(
        "SELECT email FROM runhub._recipients(%s, 'send_promo', %s, now()) WHERE excluded_by IS NULL "
        "ORDER BY email LIMIT 5", (project, Jsonb(full))).fetchall()]
    expected = [emails[i] for i in recent if len(recent) == 1 or i != recent[1]][:5]
    assert first_five == expected
    assert [s["email"] for s in p["sample"]] == expected
    assert p["count"] == len(recent) - (1 if len(recent) > 1 else 0)
