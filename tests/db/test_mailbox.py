"""E-mail addresses on the SQL side. Ingest and suppressions accept what the grammar
(plpython/addresses.py) accepts and store it as the grammar normalizes it; ingest checks the common
addresses with a plain-SQL pattern, which must agree with the grammar; an ingested customer is mailed
at the address and under the name given. (The grammar and the renderer alone:
tests/unit/test_mailbox_grammar.py.)"""
from __future__ import annotations

import email
import json
import uuid

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import event as note_outcome

from helpers.addresses import GOOD, INJECTING_NAME, PROPERTY, RENDER_FAILURES, STRICT, candidates
from helpers.db import assert_refused, count_rows, event, ingest, new_project
from helpers.workflows import ago, create_run, preview, process_runs, ready_shop
from plpython import addresses
from runhub_loader.mail.render import envelope_address, render_bytes


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
    """The pattern tested here is written once, in _is_plain_address, which every path reads."""
    def source(function: str) -> str:
        return conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (function,)).fetchone()[0]
    fast = source("runhub._is_plain_address(text)")
    assert f"p_address ~ '{addresses.ASCII_FAST_PATTERN}'" in fast
    assert "pg_catalog.length(p_address) <= 254" in fast
    assert "pg_catalog.length(pg_catalog.split_part(p_address, '@', 2)) <= 63" in fast
    assert "pg_catalog.strpos(p_address, 'xn--') = 0" in fast
    assert "runhub._is_plain_address(t.address)" in source("runhub._address(text)")  # settings, suppressions, field by field
    assert "runhub._address(" in source("runhub._event_address_field(jsonb)")
    assert ("runhub._is_plain_address(pg_catalog.lower((e -> 'customer' ->> 'email') COLLATE \"C\"))"
            in source("runhub._is_plain_event(jsonb)"))  # the common shape, taken in one expression
    patterns = conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'runhub'::regnamespace AND strpos(prosrc, %s) > 0",
                            (addresses.ASCII_FAST_PATTERN,)).fetchone()[0]
    assert patterns == 1


def _covered_by_fast_path(address: str) -> bool:
    """What the fast path is meant to decide alone: lower-case ASCII, no "?", a last label that
    starts with a letter, within its lengths."""
    domain = address.rpartition("@")[2]
    return (address.isascii() and address == address.lower() and "?" not in address
            and domain.rpartition(".")[2][:1].isalpha() and len(address) <= 254 and len(domain) <= 63
            and "xn--" not in address)


# The fast path exactly as sql/15_addresses.sql writes it, but for the pattern (checked just above).
FAST_PATH = ("SELECT %(e)s ~ %(pattern)s AND length(%(e)s) <= 254 AND length(split_part(%(e)s, '@', 2)) <= 63"
             " AND strpos(%(e)s, 'xn--') = 0")

# Letters whose case mapping differs between Unicode's rules, a locale's lower() and ASCII: the
# dotted and dotless i, the Kelvin sign, sharp s, long s, and sigma (final or not by what follows).
CASE_MAPPING = ["İnfo@example.com", "ann@İstanbul.com", "ınfo@example.com", "ann@ınfo.com",
                "\u212aelvin@example.com", "ann@\u212aelvin.com", "STRASSE@example.com", "ann@straße.de",
                "ſam@example.com", "ann@ſam.com", "ann@ΑΣ.gr", "ann@ΣΑ.gr", "ann@ας.gr", "ann@σα.gr",
                "ann@example.ΟΔΟΣ", "ann@example.οδοσ", "Ann@BÜCHER.de", "ANN@Пример.РФ"]


def test_case_mapping_is_one_rule_for_every_path(conn, project):
    """İ, ı, the Kelvin sign, ß, ſ and final sigma: the grammar's rule decides, whichever path an
    address takes (the grammar in the server, ingest, suppress, a digest recipient), never the
    database locale's lower(): a local part keeps a non-ASCII letter (and is refused), a domain
    is lower-cased by Unicode's mapping and must then be IDNA's canonical form."""
    assert addresses.mailbox("İnfo@example.com") is None  # not info@example.com, as lower() made it
    assert addresses.mailbox("\u212aelvin@example.com") is None  # not kelvin@example.com
    assert addresses.mailbox("ann@İstanbul.com") == "ann@i\u0307stanbul.com"  # not ann@istanbul.com
    assert addresses.mailbox("ann@example.ΟΔΟΣ") is None  # οδος: IDNA maps the final sigma to σ
    for address in CASE_MAPPING:
        expected = addresses.mailbox(address)
        assert conn.execute("SELECT runhub._mailbox(%s), runhub._address(%s)", (address, address)).fetchone() \
            == (expected, expected), address
        assert ingest_email(conn, project[0], address)[0] == expected, address
        with conn.transaction():
            try:
                conn.execute("SELECT runhub.suppress(%s, %s, %s, 'manual')", (*project, address))
            except psycopg.Error as err:
                assert expected is None and err.sqlstate == "PT400", (address, err)
        try:
            with conn.transaction():
                conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)",
                             (*project, json.dumps({"dailyDigestRecipient": address})))
        except psycopg.Error as err:
            assert expected is None and err.sqlstate == "PT400", (address, err)
        else:
            assert conn.execute("SELECT digest_recipient FROM runhub.projects WHERE id = %s",
                                (project[0],)).fetchone()[0] == expected, address
    suppressed = {row[0] for row in conn.execute("SELECT email FROM runhub.suppressions").fetchall()}
    assert suppressed == {addresses.mailbox(a) for a in CASE_MAPPING} - {None}


@PROPERTY
@given(address=candidates.map(lambda s: s.replace("\x00", "")))  # text cannot hold NUL
@example(address="ann@example.123")
@example(address="=?utf-8?q?x?=@example.com")
@example(address="a" * 243 + "@example.com")
@example(address="a@" + "b" * 60 + ".com")
@example(address="ann@xn--bcher-kva.de")
@example(address="İnfo@example.com")
@example(address="ann@İstanbul.com")
@example(address="ınfo@example.com")
@example(address="\u212aelvin@example.com")
@example(address="ann@\u212aelvin.com")
@example(address="ann@straße.de")
@example(address="ſam@example.com")
@example(address="ann@ΑΣ.gr")
@example(address="ann@example.ΟΔΟΣ")
@example(address=" Ann@Example.com\u2003")
def test_sql_agrees_with_the_grammar(conn, project, address):
    """One rule on both paths: what SQL stores (runhub._address, which ingest, suppress and settings
    call) is what the grammar makes of the trimmed text; the fast path accepts only what the grammar
    keeps as it is, and all of it that it covers; the server's PL/Python runs the same grammar."""
    lowered = conn.execute("SELECT lower(%s COLLATE \"C\")", (address,)).fetchone()[0]
    if address.isascii():
        assert lowered == addresses.lowered(address), address  # SQL's step is the rule's on ASCII
    fast = conn.execute(FAST_PATH, {"e": lowered, "pattern": addresses.ASCII_FAST_PATTERN}).fetchone()[0]
    note_outcome("fast path" if fast else "grammar accepts" if addresses.mailbox(address) else "refused")
    if fast:
        assert addresses.mailbox(address) == lowered, address
    if _covered_by_fast_path(lowered):
        assert fast == (addresses.mailbox(lowered) == lowered), lowered

    assert conn.execute("SELECT runhub._mailbox(%s)", (address,)).fetchone()[0] == addresses.mailbox(address)

    trimmed = conn.execute("SELECT runhub._trim(%s)", (address,)).fetchone()[0]
    expected = addresses.mailbox(trimmed) if len(address) <= 1000 else None
    assert conn.execute("SELECT runhub._address(%s)", (address,)).fetchone()[0] == expected, address
    stored, refusal = ingest_email(conn, project[0], address)
    assert stored == expected, (address, stored, expected)
    assert (refusal is None) == (expected is not None)


# -- from ingest to the wire ------------------------------------------------------------------------

def test_an_ingested_customer_is_mailed_at_the_address_and_under_the_name_given(conn):
    """From ingest to the wire, as the sender does it: an internationalized address and a name that
    looks like an encoded word (names are not refused: a person may be called anything)."""
    project, owner = ready_shop(conn)
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
