"""What counts as the relay's failure, and what as the message's: a relay that cannot be reached or
refuses the session is RelayUnavailable (it charges no message); once the session is open, a refusal
is that message's outcome. (The outage end to end, with the sender and a database:
tests/db/test_relay_outage.py.)"""
from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller

from helpers.smtp import RefusingRelay, Sink
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.smtp import RelayUnavailable, SmtpConfig, SmtpConnection


def _message(to="a@example.com") -> bytes:
    return f"From: x@example.com\r\nTo: {to}\r\nSubject: t\r\n\r\nhi\r\n".encode()


# -- what counts as the relay's failure -------------------------------------------------------------

def test_nothing_listening_is_the_relay_unavailable():
    with pytest.raises(RelayUnavailable, match="ConnectionRefused"):
        SmtpConnection(SmtpConfig("127.0.0.1", free_port(), timeout=5)).send(_message(), "x@example.com", "a@example.com")


def test_a_421_greeting_is_the_relay_unavailable():
    port = free_port()
    relay = RefusingRelay(port)
    try:
        with pytest.raises(RelayUnavailable, match="421"):
            SmtpConnection(SmtpConfig("127.0.0.1", port, timeout=5)).send(_message(), "x@example.com", "a@example.com")
    finally:
        relay.stop()


@pytest.mark.parametrize("broken", ["starttls", "auth"])
def test_tls_or_auth_the_relay_will_not_do_is_the_relay_unavailable(broken):
    """A relay that offers no STARTTLS (required here) or no AUTH (credentials given): the session
    cannot be had, whatever the message."""
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        config = SmtpConfig("127.0.0.1", controller.port, timeout=5, starttls=broken == "starttls",
                            user="runhub" if broken == "auth" else None, password="secret")
        with pytest.raises(RelayUnavailable):
            SmtpConnection(config).send(_message(), "x@example.com", "a@example.com")
    finally:
        controller.stop()


def test_a_refusal_of_the_message_is_still_the_message_s():
    """Once the session is open, what the relay says of a message is that message's outcome."""

    class Refuses(Sink):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
            return "550 5.1.1 no such user"

    controller = Controller(Refuses(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        outcome = SmtpConnection(SmtpConfig("127.0.0.1", controller.port, timeout=5)).send(
            _message(), "x@example.com", "a@example.com")
        assert (outcome.accepted, outcome.code) == (False, 550)
    finally:
        controller.stop()
