"""Unsubscribe tokens as tests make them: the v1 signer's (the oracle for links already in people's
inboxes) and every single-character edit of a token."""
from __future__ import annotations

import base64
import hashlib
import hmac


def legacy_v1_token(secret: bytes, project: str, email: str) -> str:
    """A token as the v1 signer made them (before key ids), kept as the oracle for links
    already in people's inboxes."""
    payload = f"{project}:{email}".encode()
    signature = hmac.new(secret, b"v1." + payload, hashlib.sha256).digest()[:18]
    encode = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()  # noqa: E731
    return f"v1.{encode(payload)}.{encode(signature)}"


def single_edits(token: str, characters: str):
    """Every token one insertion, deletion or substitution away (each different from token)."""
    for i in range(len(token) + 1):
        for c in characters:
            yield token[:i] + c + token[i:]
        if i < len(token):
            yield token[:i] + token[i + 1:]
            for c in characters:
                if c != token[i]:
                    yield token[:i] + c + token[i + 1:]
