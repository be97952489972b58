"""The sender's SMTP client: the server's own answer, and a relay down told from a refusal."""
from __future__ import annotations

import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    implicit_tls: bool = False  # smtps://
    starttls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> "SmtpConfig":
        """smtp[s]://user:pass@host:port?starttls=true&timeout=30"""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an smtp:// or smtps:// URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            host=parts.hostname, port=parts.port or (465 if parts.scheme == "smtps" else 25),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=parts.scheme == "smtps",
            starttls=query.get("starttls", "false").lower() in ("1", "true", "yes"),
            timeout=float(query.get("timeout", 30)),
        )


_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Outcome:
    """What the server said about one message: accepted (2xx) or refused (code 4xx/5xx, or None
    when the connection failed before an answer)."""

    accepted: bool
    code: int | None
    reply: str


class RelayUnavailable(Exception):
    """The relay could not be reached or refused the session itself — connection refused or timed
    out, TLS or AUTH failed, a 421 greeting — before any message was handed over: no message's
    fault, and nothing of it was sent."""


class SmtpConnection:
    """One SMTP session, opened on first use and reused; reopened after the server drops it."""

    def __init__(self, config: SmtpConfig):
        self.config = config
        self._smtp: smtplib.SMTP | None = None

    @property
    def relay(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _session(self) -> smtplib.SMTP:
        """The open session, or a new one; RelayUnavailable when none can be had."""
        if self._smtp is None:
            try:
                self._smtp = self._open()
            except (smtplib.SMTPException, OSError) as exc:  # OSError: refused, timed out, TLS (ssl.SSLError)
                raise RelayUnavailable(f"{type(exc).__name__}: {exc}"[:400]) from exc
        return self._smtp

    def probe(self) -> None:
        """Open a session (TLS and AUTH included) and close it; RelayUnavailable if it cannot."""
        self.close()
        self._session()
        self.close()

    def _open(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.implicit_tls:
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            if cfg.starttls and not cfg.implicit_tls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()  # again, over TLS (RFC 3207)
            if cfg.user:
                smtp.login(cfg.user, cfg.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: bytes, sender: str, recipient: str) -> Outcome:
        """MAIL, RCPT, DATA on the open session (opened first if need be: RelayUnavailable if it
        cannot be); the reply to the message's end is the verdict.
        With a server that offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write:
        two round trips a mail instead of four."""
        smtp = self._session()  # RelayUnavailable passes through: the sender's problem, not the message's
        try:
            smtp.ehlo_or_helo_if_needed()
            if smtp.does_esmtp and smtp.has_extn("pipelining"):
                return self._send_pipelined(smtp, message, sender, recipient)
            code, reply = smtp.mail(sender)
            if code >= 400:
                return self._refused(smtp, code, reply)
            code, reply = smtp.rcpt(recipient)
            if code >= 400:
                return self._refused(smtp, code, reply)
            return self._verdict(smtp, *smtp.data(message))
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            self.close()
            code = getattr(exc, "smtp_code", None)
            return Outcome(False, code if isinstance(code, int) and 400 <= code <= 599 else None,
                           f"{type(exc).__name__}: {exc}")

    def _send_pipelined(self, smtp: smtplib.SMTP, message: bytes, sender: str, recipient: str) -> Outcome:
        smtp.send(f"MAIL FROM:{smtplib.quoteaddr(sender)}\r\nRCPT TO:{smtplib.quoteaddr(recipient)}\r\nDATA\r\n")
        replies = [smtp.getreply() for _ in range(3)]  # every command gets its reply, in order
        for code, reply in replies[:2]:
            if code >= 400:
                if replies[2][0] == 354:  # a server that took DATA anyway: end it empty, then reset
                    smtp.send(b".\r\n")
                    smtp.getreply()
                return self._refused(smtp, code, reply)
        code, reply = replies[2]
        if code != 354:  # no go-ahead for the message: a refusal (a stray 2xx counts as a temporary one)
            return self._refused(smtp, code if code >= 400 else 451, reply)
        # The message is already 7-bit with CRLF line ends: only dot-stuffing is left (RFC 5321 4.5.2).
        body = _LEADING_DOT.sub(b"..", message)
        smtp.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return self._verdict(smtp, *smtp.getreply())

    def _verdict(self, smtp: smtplib.SMTP, code: int, reply: bytes) -> Outcome:
        """The reply to the end of the message: accepted, or refused."""
        if code >= 400:
            return self._refused(smtp, code, reply)
        return Outcome(True, code, reply.decode("utf-8", "replace"))

    def _refused(self, smtp: smtplib.SMTP, code: int, reply: bytes) -> Outcome:
        try:
            smtp.rset()  # keep the session usable for the next message
        except (smtplib.SMTPException, OSError):
            self.close()
        return Outcome(False, code, reply.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None
