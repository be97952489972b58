"""plpython/tokens.py as plain Python: unsubscribe tokens verify only when intact, signed by the key
they name, and that key is one we were given (not revoked)."""
from __future__ import annotations

import base64
import string
import uuid

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers.tokens import legacy_v1_token, single_edits
from plpython.tokens import LEGACY_KEY_ID, MAX_TOKEN_LENGTH, sign, verify

SECRET = b"s" * 32
OTHER_SECRET = b"t" * 32
PROJECT = str(uuid.UUID(int=7))
BASE64URL = string.ascii_letters + string.digits + "-_"
# Characters an edit is most likely to slip past a lenient parser with, tried at every position.
EDIT_CHARACTERS = BASE64URL + ".=+/ \t\n\r\x0b\x0c!:%é\u00a0\u0661\uff11"


# Made by the v1 signer itself (plpython/tokens.py before key ids) with SECRET, PROJECT and this address.
V1_FROM_THE_OLD_SIGNER = ("v1.MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDA3OmFubkBleGFtcGxlLmNvbQ"
                          ".MOXAdibMwGXi5NjehGrgA_wS")


class EveryKeyHasTheSecret(dict):
    """The keyring an edit finds hardest to get past: whatever key id the edit makes up exists,
    with the very secret that signed the token. Only the signature and the parsing stand in the way."""

    def get(self, key_id, default=None):
        return SECRET


projects = st.uuids().map(str)
emails = st.text(min_size=1, max_size=254).filter(lambda s: "\x00" not in s)
key_ids = st.integers(min_value=1, max_value=10**9 - 1)


# -- round trips --------------------------------------------------------------------------------

def test_a_signed_token_names_its_key_and_verifies_to_its_project_and_address():
    token = sign(3, SECRET, PROJECT, "ann@example.com")
    assert token.startswith("v2.3.")
    assert verify({3: SECRET}, token) == (PROJECT, "ann@example.com")


@settings(max_examples=200, deadline=None)
@given(key_ids, projects, emails)
def test_any_key_project_and_address_round_trip(key_id, project, email):
    token = sign(key_id, SECRET, project, email)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert verify({key_id: SECRET, key_id + 1: OTHER_SECRET}, token) == (project, email)


def test_several_keys_each_verify_their_own_tokens():
    keys = {1: SECRET, 2: OTHER_SECRET}
    assert verify(keys, sign(1, SECRET, PROJECT, "ann@example.com")) == (PROJECT, "ann@example.com")
    assert verify(keys, sign(2, OTHER_SECRET, PROJECT, "bob@example.com")) == (PROJECT, "bob@example.com")


# -- v1 tokens (no key id) ------------------------------------------------------------------------

def test_a_token_of_the_old_signer_verifies_with_key_1():
    assert legacy_v1_token(SECRET, PROJECT, "ann@example.com") == V1_FROM_THE_OLD_SIGNER
    assert verify({LEGACY_KEY_ID: SECRET, 2: OTHER_SECRET}, V1_FROM_THE_OLD_SIGNER) == (PROJECT, "ann@example.com")


@settings(max_examples=200, deadline=None)
@given(projects, emails)
def test_any_v1_token_verifies_with_key_1(project, email):
    assert verify({LEGACY_KEY_ID: SECRET}, legacy_v1_token(SECRET, project, email)) == (project, email)


def test_a_v1_token_needs_key_1_itself():
    token = legacy_v1_token(SECRET, PROJECT, "ann@example.com")
    assert verify({2: SECRET}, token) is None, "another key with the same secret is not key 1"
    assert verify({LEGACY_KEY_ID: OTHER_SECRET}, token) is None
    assert verify({}, token) is None, "key 1 revoked"


# -- keys: unknown, revoked, relabelled ------------------------------------------------------------

def test_a_token_of_a_revoked_or_unknown_key_is_refused():
    token = sign(1, SECRET, PROJECT, "ann@example.com")
    assert verify({2: OTHER_SECRET}, token) is None, "key 1 revoked, key 2 current"
    assert verify({}, token) is None
    assert verify({2: SECRET}, sign(3, SECRET, PROJECT, "ann@example.com")) is None, "the right secret under an unknown id"


def test_the_key_id_is_signed_a_token_cannot_be_moved_to_another_key():
    token = sign(1, SECRET, PROJECT, "ann@example.com")
    relabelled = token.replace("v2.1.", "v2.2.", 1)
    assert verify({1: SECRET, 2: SECRET}, relabelled) is None


def test_another_secret_or_a_changed_payload_does_not_verify():
    token = sign(1, SECRET, PROJECT, "ann@example.com")
    assert verify({1: OTHER_SECRET}, token) is None
    version, key_id, _, signature = token.split(".")
    other = sign(1, SECRET, PROJECT, "bob@example.com").split(".")[2]
    assert verify({1: SECRET}, f"{version}.{key_id}.{other}.{signature}") is None


@pytest.mark.parametrize("key_id", [0, -1, 10**9, "1", 1.0, True, None])
def test_sign_takes_only_a_positive_integer_key_id(key_id):
    with pytest.raises((ValueError, TypeError)):
        sign(key_id, SECRET, PROJECT, "ann@example.com")


# -- strict parsing: any altered token is refused --------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: sign(1, SECRET, PROJECT, "ann@example.com"),
    lambda: sign(42, SECRET, PROJECT, "zoé+tag@example.com"),
    lambda: legacy_v1_token(SECRET, PROJECT, "ann@example.com"),
], ids=["v2", "v2 key 42, non-ASCII address", "v1"])
def test_every_single_character_edit_of_a_token_is_refused(make):
    token = make()
    keys = EveryKeyHasTheSecret()
    assert verify(keys, token) is not None
    refused = [edit for edit in single_edits(token, EDIT_CHARACTERS) if verify(keys, edit) is not None]
    assert refused == []


@settings(max_examples=500, deadline=None)
@given(key_ids, projects, emails, st.data())
def test_any_single_character_edit_of_any_token_is_refused(key_id, project, email, data):
    token = sign(key_id, SECRET, project, email)
    i = data.draw(st.integers(min_value=0, max_value=len(token)), label="position")
    c = data.draw(st.one_of(st.sampled_from(EDIT_CHARACTERS), st.characters()), label="character")
    edit = data.draw(st.sampled_from([
        token[:i] + c + token[i:],          # insertion
        token[:i] + token[i + 1:],          # deletion (nothing to delete at the end: no change)
        token[:i] + c + token[i + 1:],      # substitution
    ]), label="edit")
    assume(edit != token)
    assert verify(EveryKeyHasTheSecret(), edit) is None


def test_decodings_a_lenient_decoder_accepts_are_refused():
    token = sign(1, SECRET, PROJECT, "ann@example.com")  # a payload of 52 bytes: 70 characters, 4 spare bits
    head, payload, signature = token.rsplit(".", 2)
    lenient = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # noqa: E731
    other_trailing_bits = payload[:-1] + BASE64URL[BASE64URL.index(payload[-1]) ^ 1]
    assert lenient(other_trailing_bits) == lenient(payload), "the decoder ignores the spare bits"
    for altered in (token.replace(".", ".!!"),  # the decoder skips characters outside its alphabet
                    f"{head}.{other_trailing_bits}.{signature}",
                    f"{head}.{payload}==.{signature}", f"{head}.{payload}.{signature}==",
                    f"{head}.{payload[:4]} {payload[4:]}.{signature}", token + "\n", " " + token,
                    token.replace("v2.1.", "v2.01.", 1), token.replace("v2.1.", "v2.+1.", 1),
                    token.replace("v2.1.", "v2.\u0661.", 1),  # an Arabic-Indic one: int() would take it
                    f"{head}.{payload}.{signature}.", f"v2.{payload}.{signature}",
                    f"v1.{payload}.{signature}", token.upper()):
        assert verify({1: SECRET}, altered) is None, altered


def test_a_payload_whose_project_is_not_a_uuid_as_postgresql_prints_it_is_refused():
    # unsubscribe() casts the project to uuid: only the canonical form may get there
    for project in ("not-a-uuid", "AAAAAAAA-0000-4000-8000-00000000000F", "{" + PROJECT + "}", PROJECT.replace("-", ""), ""):
        assert verify({1: SECRET}, sign(1, SECRET, project, "ann@example.com")) is None, project


def test_a_payload_without_an_address_is_refused():
    assert verify({1: SECRET}, sign(1, SECRET, PROJECT, "")) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300), st.integers(), st.binary(max_size=50),
                 st.builds(lambda t: "v2.1." + t, st.text(max_size=200)),
                 st.builds(lambda t: "v1." + t, st.text(max_size=200))))
def test_anything_else_is_refused_without_raising(token):
    assert verify({1: SECRET}, token) is None


def test_an_overlong_token_is_refused_before_any_work():
    token = sign(1, SECRET, PROJECT, "a" * 1600)
    assert len(token) > MAX_TOKEN_LENGTH
    assert verify({1: SECRET}, token) is None
