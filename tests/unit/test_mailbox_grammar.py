"""E-mail addresses and names that mail carries, without a database. One grammar
(plpython/addresses.py) decides which addresses ingest, suppressions and the renderer accept: every
address it accepts renders and reads back from the message as sent, every one it refuses would not
render. And a customer name (or subject) that looks like an RFC 2047 encoded word is shown as written,
never decoded into headers. (The SQL side — ingest's fast path agreeing with the grammar, suppress,
an ingested customer mailed as given: tests/db/test_mailbox.py.)"""
from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import example, given
from hypothesis import event as note_outcome

from helpers.addresses import BAD, GOOD, INJECTING_NAME, PROPERTY, STRICT, candidates, encoded
from plpython import addresses
from runhub_loader.mail import mime
from runhub_loader.mail.preview import SAMPLES
from runhub_loader.mail.render import envelope_address, render_bytes
from runhub_loader.mail.values import RenderError


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


# -- names that look like encoded words ------------------------------------------------------------

@pytest.mark.parametrize("name", [
    INJECTING_NAME, encoded("Ann"), "=?utf-8?q?Bcc:_evil@x.com?=", "Ann =?iso-8859-1?q?=E9?= Lee",
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
