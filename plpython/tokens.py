"""Signed tokens for one-click unsubscribe links: HMAC-SHA256 over the project and address.

A token is `v1.<payload>.<signature>`, both parts base64url without padding; the payload is
`<project uuid>:<e-mail>`. Verification is constant-time and returns None for anything forged,
truncated or malformed, so a bad token can never raise inside the server.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from ._export import sql_function

VERSION = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, VERSION.encode() + b"." + payload, hashlib.sha256).digest()[:18]


def sign(secret: bytes, project: str, email: str) -> str:
    payload = f"{project}:{email}".encode()
    return f"{VERSION}.{_b64(payload)}.{_b64(_signature(secret, payload))}"


def verify(secret: bytes, token: str | None) -> tuple[str, str] | None:
    """(project, email) when the token is ours and intact, else None."""
    if not isinstance(token, str) or len(token) > 2000:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        return None
    try:
        payload, signature = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        return None
    project, sep, email = payload.decode("utf-8", "replace").partition(":")
    return (project, email) if sep and email else None


@sql_function("runhub._sign_unsubscribe(p_secret bytea, p_project uuid, p_email text) RETURNS text")
def sign_unsubscribe(p_secret, p_project, p_email):
    return sign(bytes(p_secret), str(p_project), p_email)


@sql_function("runhub._verify_unsubscribe(p_secret bytea, p_token text) RETURNS text[]")
def verify_unsubscribe(p_secret, p_token):
    verified = verify(bytes(p_secret), p_token)
    return list(verified) if verified else None


@sql_function("runhub._sign_unsubscribe_many(p_secret bytea, p_projects uuid[], p_emails text[]) RETURNS text[]")
def sign_unsubscribe_many(p_secret, p_projects, p_emails):
    """sign() for a batch (one call per claim, not per message); None where either is None."""
    secret = bytes(p_secret)
    return [sign(secret, str(project), email) if project is not None and email is not None else None
            for project, email in zip(p_projects or [], p_emails or [])]
