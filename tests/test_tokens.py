"""plpython/tokens.py as plain Python: unsubscribe tokens verify only when intact and ours."""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from plpython.tokens import sign, verify

SECRET = b"s" * 32
PROJECT = str(uuid.UUID(int=7))


def test_a_signed_token_verifies_to_its_project_and_address():
    assert verify(SECRET, sign(SECRET, PROJECT, "ann@example.com")) == (PROJECT, "ann@example.com")


def test_another_secret_or_a_changed_payload_does_not_verify():
    token = sign(SECRET, PROJECT, "ann@example.com")
    assert verify(b"t" * 32, token) is None
    version, payload, signature = token.split(".")
    other = sign(SECRET, PROJECT, "bob@example.com").split(".")[1]
    assert verify(SECRET, f"{version}.{other}.{signature}") is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300), st.integers(), st.binary(max_size=50)))
def test_anything_else_is_refused_without_raising(token):
    assert verify(SECRET, token) is None


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=254).filter(lambda s: "\x00" not in s))
def test_any_address_round_trips(email):
    assert verify(SECRET, sign(SECRET, PROJECT, email)) == (PROJECT, email)
