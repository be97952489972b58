"""Signed tokens for one-click unsubscribe links: HMAC-SHA256 over the key id, project and address.

A token is `v2.<key id>.<payload>.<signature>`: the key id in decimal, the payload
`<project uuid>:<e-mail>` and the signature (HMAC-SHA256 of all the text before it, first 18 bytes)
both base64url without padding. Each token names the key that signed it, so keys can rotate: the
newest signs, older ones still verify until revoked. Tokens minted before key ids,
`v1.<payload>.<signature>`, verify with key 1, the database's original secret.

Parsing is strict: any change to a token's text is refused, even one a lenient base64 decoder would
let through (stray characters, padding, whitespace, other trailing bits). Verification is
constant-time and returns None for anything forged, truncated, altered, malformed or signed with a
key it was not given, so a bad token can never raise inside the server.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

from ._export import sql_function

VERSION = "v2"
LEGACY_VERSION = "v1"
LEGACY_KEY_ID = 1  # v1 tokens name no key: they were all signed with the original secret
MAX_TOKEN_LENGTH = 2000
SIGNATURE_BYTES = 18

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_KEY_ID = re.compile(r"[1-9][0-9]{0,8}")  # canonical decimal only ("01", "+1", "١" are not ids)
_PROJECT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # as PostgreSQL prints a uuid


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _strict_unb64(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64url text, else None. Re-encoding must give the text
    back: the decoder alone skips stray characters and ignores trailing bits."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64(data) == text else None


def _mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def sign(key_id: int, secret: bytes, project: str, email: str) -> str:
    """A v2 token for (project, email) under key key_id."""
    if type(key_id) is not int or not 0 < key_id < 10**9:
        raise ValueError(f"a key id is a positive integer below 10**9, not {key_id!r}")
    signed = f"{VERSION}.{key_id}.{_b64(f'{project}:{email}'.encode())}"
    return f"{signed}.{_b64(_mac(secret, signed.encode()))}"


def _parse(token: str) -> tuple[int, bytes, bytes, bytes] | None:
    """(key id, payload, signature, message signed) of a well-formed v2 or v1 token, else None."""
    parts = token.split(".")
    if len(parts) == 4 and parts[0] == VERSION and _KEY_ID.fullmatch(parts[1]):
        key_id, payload_text, signature_text = int(parts[1]), parts[2], parts[3]
    elif len(parts) == 3 and parts[0] == LEGACY_VERSION:
        key_id, payload_text, signature_text = LEGACY_KEY_ID, parts[1], parts[2]
    else:
        return None
    payload, signature = _strict_unb64(payload_text), _strict_unb64(signature_text)
    if payload is None or signature is None:
        return None
    if parts[0] == LEGACY_VERSION:  # v1 signed its version and the decoded payload
        return key_id, payload, signature, b"v1." + payload
    return key_id, payload, signature, token.rpartition(".")[0].encode("ascii")


def _project_and_email(payload: bytes) -> tuple[str, str] | None:
    try:
        project, sep, email = payload.decode("utf-8").partition(":")
    except UnicodeDecodeError:
        return None
    if not sep or not email or "\x00" in email or not _PROJECT.fullmatch(project):
        return None
    return project, email


def verify(keys: Mapping[int, bytes], token: str | None) -> tuple[str, str] | None:
    """(project, email) when the token is intact and signed by the key of keys (id -> secret)
    that it names, else None. Revoked keys are simply not in keys."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    parsed = _parse(token)
    if parsed is None:
        return None
    key_id, payload, signature, message = parsed
    secret = keys.get(key_id)
    if secret is None or not hmac.compare_digest(signature, _mac(bytes(secret), message)):
        return None
    return _project_and_email(payload)


@sql_function("runhub._sign_unsubscribe(p_key_id int, p_secret bytea, p_project uuid, p_email text) RETURNS text")
def sign_unsubscribe(p_key_id, p_secret, p_project, p_email):
    return sign(p_key_id, bytes(p_secret), str(p_project), p_email)


@sql_function("runhub._verify_unsubscribe(p_key_ids int[], p_secrets bytea[], p_token text) RETURNS text[]")
def verify_unsubscribe(p_key_ids, p_secrets, p_token):
    """{project, email}, or null; p_key_ids[i] names p_secrets[i], the keys not revoked."""
    keys = {key_id: secret for key_id, secret in zip(p_key_ids or [], p_secrets or [])
            if key_id is not None and secret is not None}
    verified = verify(keys, p_token)
    return list(verified) if verified else None


@sql_function("runhub._sign_unsubscribe_many(p_key_id int, p_secret bytea, p_projects uuid[], p_emails text[]) "
              "RETURNS text[]")
def sign_unsubscribe_many(p_key_id, p_secret, p_projects, p_emails):
    """sign() for a batch (one call per claim, not per message); None where either is None."""
    secret = bytes(p_secret)
    return [sign(p_key_id, secret, str(project), email) if project is not None and email is not None else None
            for project, email in zip(p_projects or [], p_emails or [])]
