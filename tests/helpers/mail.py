"""Mail helpers: a rendered message read back as a client would."""
from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from typing import Any, Mapping

from runhub_loader.mail.render import POLICY, render_bytes


def render_message(template: str, locale: str | None, variables: Mapping[str, Any], **kwargs) -> EmailMessage:
    """render_bytes, parsed back into an EmailMessage."""
    return message_from_bytes(render_bytes(template, locale, variables, **kwargs), policy=POLICY)


def stored_message_id(header_message_id: str) -> str:
    """The outbox's Message-ID of a delivered mail: the header carries it on the platform's domain
    (runhub_loader/mail/render.py on_domain), the outbox as runhub wrote it, <id@runhub>."""
    local = str(header_message_id).strip()[1:].rpartition("@")[0]
    return f"<{local}@runhub>"
