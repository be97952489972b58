"""E-mail addresses and names that mail carries. One grammar (plpython/addresses.py) decides which
addresses ingest, suppressions and the renderer accept: every address ingest accepts renders and
reads back from the message as sent, every one it refuses would not render. Ingest checks the
common addresses with a plain-SQL pattern: it must agree with the grammar. And a customer name that
looks like an RFC 2047 encoded word is shown as written, never decoded into headers."""
from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import string
import uuid
from encodings import idna

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st

from conftest import assert_refused, count_rows, event, ingest, new_project
from plpython import addresses
from runhub_loader.mail import mime
from runhub_loader.mail.preview import SAMPLES
from runhub_loader.mail.render import envelope_address, render_bytes
from runhub_loader.mail.values import RenderError
from workflow_helpers import ago, create_run, preview, process_runs, ready_project

# Deterministic examples and no example database written into the repository.
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
STRICT = email.policy.default.clone(raise_on_defect=True)

# The three addresses ingest accepted before and the sender could not render.
RENDER_FAILURES = ["\x01a@b.com", "<a@b.com>", "a\x85b@c.com"]
LABEL_63, LABEL_64 = "l" * 63, "l" * 64

# (as given, stored (lower-cased), on the wire)
GOOD = [
    ("ann@example.com", "ann@example.com", "ann@example.com"),
    ("Ann.Lee@Example.COM", "ann.lee@example.com", "ann.lee@example.com"),
    ("o'brien+tag@shop.example.ie", "o'brien+tag@shop.example.ie", "o'brien+tag@shop.example.ie"),
    ("!#$%&'*+-/?=^_`{|}~@example.com", "!#$%&'*+-/?=^_`{|}~@example.com", "!#$%&'*+-/?=^_`{|}~@example.com"),
    ("ann@bücher.de", "ann@bücher.de", "ann@xn--bcher-kva.de"),
    ("Ann@BÜCHER.de", "ann@bücher.de", "ann@xn--bcher-kva.de"),
    ("ann@xn--bcher-kva.de", "ann@bücher.de", "ann@xn--bcher-kva.de"),  # an A-label: stored as its Unicode
    ("ann@пример.рф", "ann@пример.рф", "ann@xn--e1afmkfd.xn--p1ai"),
    ("ann@例え.テスト", "ann@例え.テスト", "ann@xn--r8jz45g.xn--zckzah"),
    ("ann@😀.ws", "ann@😀.ws", "ann@xn--e28h.ws"),
    ("a@b.co", "a@b.co", "a@b.co"),
    ("a@1.example.com", "a@1.example.com", "a@1.example.com"),  # digits in labels, not the last
    ("a@b.c-d", "a@b.c-d", "a@b.c-d"),
    ("a@a-b--c.example", "a@a-b--c.example", "a@a-b--c.example"),
    (f"a@{LABEL_63}.com", f"a@{LABEL_63}.com", f"a@{LABEL_63}.com"),
    ("a" * 242 + "@example.com", "a" * 242 + "@example.com", "a" * 242 + "@example.com"),  # 254
]

BAD = RENDER_FAILURES + [
    "", " ", "ann", "ann@", "@example.com", "ann@example", "ann@@example.com", "ann@ex@ample.com",
    "ann smith@example.com", " ann@example.com", "ann@example.com\n", "ann@exa mple.com",
    "a\x00@b.com", "a@b\x01.com", "a\x7f@b.com", "a@b\x85c.com", "a\u2028@b.com",
    ".ann@example.com", "ann.@example.com", "an..n@example.com",              # not a dot-atom
    '"ann"@example.com', '"a b"@example.com', "a(b)@c.com", "a,b@c.com", "a;b@c.com", "a:b@c.com",
    "a\\b@c.com", "a[b@c.com", "ann@example.com>", "Ann <ann@example.com>", "ann@<example.com>",
    "=?utf-8?q?x?=@example.com", "a=?b@example.com",                        # encoded-word look-alikes
    "annë@example.com",                                                     # a non-ASCII local part
    "ann@exa\u0308mple.com",  # "ä" as "a" and a combining mark: not IDNA's canonical form
    "ann@example.com.", "ann@.example.com", "ann@example..com",             # trailing / empty labels
    "ann@-example.com", "ann@example-.com", "ann@exa_mple.com", "ann@example.-com",
    f"a@{LABEL_64}.com", f"a@b.{LABEL_64}",                                  # labels of 64
    "a" * 243 + "@example.com",                                             # 255 characters
    "a" * 230 + "@bücherbücherbü.de",  # 248 characters as given, 255 on the wire
    "ann@[192.0.2.1]", "ann@[IPv6:2001:db8::1]", "ann@192.0.2.1", "ann@example.123",  # IP literals
    "ann@straße.de",                 # IDNA 2003 maps ß to ss: another domain than the one shown
    "ann@ＥＸＡＭＰＬＥ.com",          # full-width letters map to ASCII: another spelling of example.com
    "ann@exam\u200bple.com", "ann@exam\u00adple.com",  # zero-width space, soft hyphen: mapped away
    "ann@bücher。de", "ann@bücher．de",   # dots IDNA reads but a split on "." does not
    "ann@bü_cher.de", "ann@bü cher.de", "ann@bü\x01cher.de",  # an A-label that is not a hostname label
    "ann@\u05d0a.com",  # a right-to-left letter next to a left-to-right one (IDNA's bidi rule)
    "ann@" + "ü" * 60 + ".de",  # a Unicode label whose A-label is over 63
]


@pytest.mark.parametrize(("given_", "stored", "wire"), GOOD)
def test_good_addresses_are_normalized_and_encoded_for_the_wire(given_, stored, wire):
    assert addresses.mailbox(given_) == stored
    assert addresses.ascii_mailbox(given_) == wire
    assert envelope_address(given_) == wire


@pytest.mark.parametrize("address", BAD)
def test_bad_addresses_are_refused_by_the_grammar_and_the_renderer(address):
    assert addresses.mailbox(address) is None
    assert addresses.ascii_mailbox(address) is None
    with pytest.raises(RenderError, match="to_email"):
        envelope_address(address)


@pytest.mark.parametrize("value", [None, 42, b"ann@example.com", ["ann@example.com"]])
def test_what_is_not_text_is_not_an_address(value):
    assert addresses.mailbox(value) is None and addresses.ascii_mailbox(value) is None


# -- property: the grammar and the renderer ------------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# What breaks parsers, headers and IDNA, and what maps to something else.
HOSTILE = ["\x00", "\x01", "\x1f", "\x7f", "\x85", "\u200b", "\u00a0", "\u00ad", "\u2028", "\u202e", "\ufeff",
           " ", "\t", "\r\n", "\n", "<", ">", '"', "(", ")", ",", ";", ":", "\\", "[", "]", "@", ".", "..",
           "=?", "?=", "=?utf-8?q?x?=", "-", "_", "xn--", "\u3002", "\uff0e", "\uff61", "ß", "İ", "\u212a",
           "ＡＢ", "é", "É", "ü", "Ü", "😀", "ς", "\u05d0", "ا", "1", "0x", "IPv6:", "\ud7ff"]
ldh_labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
unicode_labels = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd", "Mn", "So")), min_size=1, max_size=8)
labels = st.one_of(ldh_labels, unicode_labels, st.sampled_from(HOSTILE), st.sampled_from(["com", "de", "xn--p1ai", "123"]),
                   st.integers(60, 66).map(lambda n: "x" * n),
                   st.lists(st.one_of(ldh_labels, unicode_labels, st.sampled_from(HOSTILE)), min_size=2, max_size=4).map("".join))
domains = st.lists(labels, min_size=1, max_size=5).map(".".join)
local_parts = st.one_of(
    st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=3).map(".".join),
    st.lists(st.one_of(st.text(ATEXT, min_size=1, max_size=6), st.sampled_from(HOSTILE)), min_size=1, max_size=5).map("".join),
    st.integers(60, 250).map(lambda n: "a" * n))


def _canonical(label: str) -> str:
    """label in IDNA's canonical form, when it has one."""
    try:
        return idna.ToUnicode(idna.ToASCII(label))
    except UnicodeError:
        return "bücher"


# Well-formed addresses, ASCII and internationalized, then the same with one thing wrong.
well_formed = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels + [tld])}",
    st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=3).map(".".join),
    st.lists(st.one_of(ldh_labels, unicode_labels.map(_canonical)), min_size=1, max_size=3),
    st.sampled_from(["com", "de", "co", "museum", "xn--p1ai", "рф", "テスト", "1a", "a1"]))


@st.composite
def mutated(draw):
    address = draw(well_formed)
    at = draw(st.integers(0, len(address)))
    change = draw(st.sampled_from(["insert", "replace", "delete", "upper"]))
    if change == "upper":
        return address.upper()
    piece = draw(st.sampled_from(HOSTILE)) if change != "delete" else ""
    return address[:at] + piece + address[at + (change != "insert"):]


# Strings near the grammar's every edge: well-formed, with one thing wrong, assembled from any
# pieces, and arbitrary text.
candidates = st.one_of(well_formed, mutated(), st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains),
                       st.text(max_size=40))


def sent_to(to_email: str, to_name: str | None = None) -> email.message.EmailMessage:
    raw = render_bytes("onboarding", "en", SAMPLES["onboarding"], message_id="<m.1@runhub.example>",
                       to_email=to_email, to_name=to_name, from_addr="Shop <shop@example.com>",
                       unsubscribe_url="https://runhub.example/u?token=t")
    return email.message_from_bytes(raw, policy=STRICT)


@PROPERTY
@given(address=candidates)
@example(address="=?utf-8?b?Y2VvQGJhbmsuY29t?=@evil.example")  # base64 is atext: a reader would decode it
@example(address="ann@bücher.de")
def test_what_the_grammar_accepts_renders_and_reads_back_as_sent(address):
    stored = addresses.mailbox(address)
    note_outcome("refused" if stored is None else "accepted, Unicode" if not stored.isascii() else "accepted, ASCII")
    if stored is None:
        with pytest.raises(RenderError):
            envelope_address(address)
        return
    assert addresses.mailbox(stored) == stored, "normalizing twice changes nothing"
    wire = envelope_address(stored)
    assert wire == addresses.ascii_mailbox(address) and wire.isascii() and len(wire) <= 254
    parsed = sent_to(stored, "Ann")
    assert [a.addr_spec for a in parsed["To"].addresses] == [wire]
    assert not parsed["To"].defects


# -- the SQL side --------------------------------------------------------------------------------

def ingest_email(conn, project, address):
    """(stored address, None) or (None, refusal detail); a refusal must write nothing."""
    before = count_rows(conn, "business_events")
    try:
        result = ingest(conn, project, event(customer={"email": address}))
    except psycopg.Error as err:
        assert (err.sqlstate, err.diag.message_primary) == ("PT400", "events.invalid"), (str(err), address)
        assert err.diag.message_hint
        assert count_rows(conn, "business_events") == before, "a refused event must write nothing"
        return None, json.loads(err.diag.message_detail)
    stored = conn.execute("SELECT customer_email FROM runhub.business_events WHERE id = %s",
                          (result["eventId"],)).fetchone()[0]
    return stored, None


@pytest.fixture
def project(conn):
    project, owner = new_project(conn)
    return project, owner


def test_ingest_refuses_what_the_sender_could_not_render_and_writes_nothing(conn, project):
    for address in RENDER_FAILURES:
        stored, refusal = ingest_email(conn, project[0], address)
        assert stored is None and refusal["field"] == "customer.email", address


def test_suppress_refuses_what_the_sender_could_not_render(conn, project):
    for address in RENDER_FAILURES + ["ann@straße.de", "ann@example.com."]:
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute("SELECT runhub.suppress(%s, %s, %s, 'manual')", (*project, address))
        assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "email", address
    assert count_rows(conn, "suppressions") == 0


def test_suppress_stores_the_address_as_ingest_does(conn, project):
    for given_, stored, _ in GOOD[:6]:
        conn.execute("SELECT runhub.suppress(%s, %s, %s, 'manual')", (*project, f" {given_} "))
        assert ingest_email(conn, project[0], given_) == (stored, None)
    suppressed = {row[0] for row in conn.execute("SELECT email FROM runhub.suppressions").fetchall()}
    assert suppressed == {stored for _, stored, _ in GOOD[:6]}


@pytest.mark.parametrize(("given_", "stored", "wire"), GOOD)
def test_ingest_stores_good_addresses_normalized(conn, project, given_, stored, wire):
    assert ingest_email(conn, project[0], given_) == (stored, None)


def test_ingest_runs_the_fast_path_it_was_tested_with(conn):
    def source(function: str) -> str:
        return conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (function,)).fetchone()[0]
    field_by_field = source("runhub._event_field_by_field(uuid, jsonb)")
    assert f"customer_email !~ '{addresses.ASCII_FAST_PATTERN}'" in field_by_field
    assert ("length(v_row.customer_email) > 254 OR length(split_part(v_row.customer_email, '@', 2)) > 63\n"
            "           OR strpos(v_row.customer_email, 'xn--') > 0") in field_by_field
    plain = source("runhub._is_plain_event(jsonb)")  # the common shape, taken in one expression
    assert f"pg_catalog.lower(e -> 'customer' ->> 'email') ~ '{addresses.ASCII_FAST_PATTERN}'" in plain
    assert ("AND pg_catalog.length(e -> 'customer' ->> 'email') <= 254\n"
            "                         AND pg_catalog.length(pg_catalog.split_part(e -> 'customer' ->> 'email', '@', 2)) <= 63\n"
            "                         AND pg_catalog.strpos(pg_catalog.lower(e -> 'customer' ->> 'email'), 'xn--') = 0") in plain


def _covered_by_fast_path(address: str) -> bool:
    """What the fast path is meant to decide alone: lower-case ASCII, no "?", a last label that
    starts with a letter, within its lengths."""
    domain = address.rpartition("@")[2]
    return (address.isascii() and address == address.lower() and "?" not in address
            and domain.rpartition(".")[2][:1].isalpha() and len(address) <= 254 and len(domain) <= 63
            and "xn--" not in address)


# The fast path exactly as sql/20_events.sql writes it, but for the pattern (checked just above).
FAST_PATH = ("SELECT %(e)s ~ %(pattern)s AND length(%(e)s) <= 254 AND length(split_part(%(e)s, '@', 2)) <= 63"
             " AND strpos(%(e)s, 'xn--') = 0")


@PROPERTY
@given(address=candidates.map(lambda s: s.replace("\x00", "")))  # text cannot hold NUL
@example(address="ann@example.123")
@example(address="=?utf-8?q?x?=@example.com")
@example(address="a" * 243 + "@example.com")
@example(address="a@" + "b" * 60 + ".com")
@example(address="ann@xn--bcher-kva.de")
def test_sql_agrees_with_the_grammar(conn, project, address):
    """The fast path accepts only what the grammar keeps as it is, and all of it that it covers;
    the server's PL/Python runs the same grammar; and ingest, which uses both, stores what the
    grammar says or refuses what it refuses."""
    lowered = address.lower() if address.isascii() else address
    fast = conn.execute(FAST_PATH, {"e": lowered, "pattern": addresses.ASCII_FAST_PATTERN}).fetchone()[0]
    note_outcome("fast path" if fast else "grammar accepts" if addresses.mailbox(address) else "refused")
    if fast:
        assert addresses.mailbox(lowered) == lowered, lowered
    if _covered_by_fast_path(lowered):
        assert fast == (addresses.mailbox(lowered) == lowered), lowered

    assert conn.execute("SELECT runhub._mailbox(%s)", (address,)).fetchone()[0] == addresses.mailbox(address)

    normalized = conn.execute("SELECT lower(runhub._trim(%s))", (address,)).fetchone()[0]
    expected = addresses.mailbox(normalized) if len(address) <= 1000 else None
    stored, refusal = ingest_email(conn, project[0], address)
    assert stored == expected, (address, stored, expected)
    assert (refusal is None) == (expected is not None)


# -- names that look like encoded words ------------------------------------------------------------

def _encoded(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


INJECTING_NAME = _encoded("x\r\nBcc: evil@x.com")  # =?utf-8?b?eA0KQmNjOiBldmlsQHguY29t?=


@pytest.mark.parametrize("name", [
    INJECTING_NAME, _encoded("Ann"), "=?utf-8?q?Bcc:_evil@x.com?=", "Ann =?iso-8859-1?q?=E9?= Lee",
    f'"{INJECTING_NAME}"', "=?", "a=?b",
])
def test_a_name_that_looks_like_an_encoded_word_is_shown_as_written(name):
    header = mime.address(name, "ann@example.com")
    assert re.fullmatch(r"(=\?utf-8\?b\?[A-Za-z0-9+/=]*\?=(\r\n )?)+ <ann@example\.com>", header), "never raw"
    parsed = sent_to("ann@example.com", name)
    assert "Bcc" not in parsed and "Cc" not in parsed
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ann@example.com"]
    assert parsed["To"].addresses[0].display_name == name


def test_a_subject_that_looks_like_an_encoded_word_is_shown_as_written():
    variables = {**SAMPLES["promo"], "subject": INJECTING_NAME}
    raw = render_bytes("promo", "en", variables, message_id="<m.1@runhub.example>", to_email="ann@example.com",
                       to_name=INJECTING_NAME, from_addr="Shop <shop@example.com>",
                       unsubscribe_url="https://runhub.example/u?token=t")
    assert INJECTING_NAME.encode() not in raw
    parsed = email.message_from_bytes(raw, policy=STRICT)
    assert parsed["Subject"] == INJECTING_NAME
    assert "Bcc" not in parsed


def test_an_ingested_customer_is_mailed_at_the_address_and_under_the_name_given(conn):
    """From ingest to the wire, as the sender does it: an internationalized address and a name that
    looks like an encoded word (names are not refused: a person may be called anything)."""
    project, owner = ready_project(conn)
    ingest(conn, project, {"type": "user_signed_up", "occurredAt": ago(1), "idempotencyKey": uuid.uuid4().hex,
                           "customer": {"email": " Ann@Bücher.de ", "name": INJECTING_NAME}})
    assert preview(conn, project, owner, "onboard_users")["count"] == 1
    create_run(conn, project, owner, "onboard_users", "first")
    process_runs(conn)
    [(message,)] = conn.execute("SELECT * FROM runhub.claim_messages('w-mailbox', 10, 120)").fetchall()
    assert (message["toEmail"], message["toName"]) == ("ann@bücher.de", INJECTING_NAME)
    raw = render_bytes(message["template"], message["locale"], message["variables"], message_id=message["messageId"],
                       to_email=message["toEmail"], to_name=message["toName"], from_addr="Shop <shop@example.com>",
                       unsubscribe_url=f"https://runhub.example/u?token={message['unsubscribeToken']}")
    parsed = email.message_from_bytes(raw, policy=STRICT)
    assert "Bcc" not in parsed
    assert envelope_address(message["toEmail"]) == "ann@xn--bcher-kva.de"
    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (INJECTING_NAME, "ann@xn--bcher-kva.de")


def test_both_spellings_of_an_idn_address_are_one_customer_and_one_suppression(conn, project):
    """Ingested as A-labels, suppressed in Unicode (or the other way round): the same address, so the
    suppression excludes the customer."""
    assert ingest_email(conn, project[0], "Ann@XN--BCHER-KVA.de") == ("ann@bücher.de", None)
    assert ingest_email(conn, project[0], "ann@bücher.de") == ("ann@bücher.de", None)
    conn.execute("SELECT runhub.suppress(%s, %s, 'ann@xn--bcher-kva.de', 'manual')", project)
    customers = {r[0] for r in conn.execute("SELECT email FROM runhub.customers").fetchall()}
    suppressed = {r[0] for r in conn.execute("SELECT email FROM runhub.suppressions").fetchall()}
    assert customers == suppressed == {"ann@bücher.de"}
