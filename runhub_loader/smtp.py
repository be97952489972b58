"""SMTP delivery for the sender: a reusable connection that reports the server's own answer, and the
aiosmtpd sink behind `runhub smtp-sink` that stores every mail it accepts as an .eml file."""
from __future__ import annotations

import os
import pwd
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
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


def ehlo_responses(session, hostname: str, responses: list[str], pipelining: bool = True) -> list[str]:
    """For an aiosmtpd handle_EHLO hook: offer PIPELINING, as production MTAs do (aiosmtpd reads
    pipelined commands in order; it just does not say so)."""
    session.host_name = hostname  # the hook replaces aiosmtpd's own bookkeeping
    return responses[:-1] + (["250-PIPELINING"] if pipelining else []) + responses[-1:]


class UnsafeMailFolder(RuntimeError):
    """The mail folder is a symlink, not a directory, or someone else's: mail stays out of it."""


def open_private_folder(folder: Path) -> int:
    """A descriptor on `folder`, created 0700 if missing (umask can only narrow that, so no window).
    An existing one must be ours and a real directory (a planted symlink would send root's writes
    anywhere) and is made 0700: the mail in it is nobody else's to read."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except NotADirectoryError:
        raise UnsafeMailFolder(f"refusing to store mail in {folder}: it is a symlink or not a directory") from None
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        os.close(fd)
        raise UnsafeMailFolder(f"refusing to store mail in {folder}: it belongs to {_user_name(owner)}, "
                               f"who could read every mail, not to {_user_name(os.geteuid())}")
    os.fchmod(fd, 0o700)
    return fd


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def write_new_private_file(folder_fd: int, name: str, content: bytes) -> None:
    """Create `name` in the folder 0600 from the start; never over an existing file or through a symlink."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=folder_fd)
    with os.fdopen(fd, "wb") as file:
        file.write(content)


class EmlSink:
    """aiosmtpd handler: store each accepted mail as <dir>/<time>-<n>.eml, folder 0700, files 0600."""

    def __init__(self, folder: Path):
        self.folder = folder
        os.close(open_private_folder(folder))  # refuse an unsafe folder now, not at the first mail
        self._count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        return ehlo_responses(session, hostname, responses)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.store(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"

    def store(self, content: bytes) -> Path:
        # The folder is re-opened and re-checked for every mail: whoever owns its parent (the
        # server's user, for <home>/mail) could have swapped it for a symlink since.
        folder_fd = open_private_folder(self.folder)
        try:
            while True:
                self._count += 1
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{self._count:06d}.eml"
                try:
                    write_new_private_file(folder_fd, name, content)
                    return self.folder / name
                except FileExistsError:  # a sink restarted within the same second took this name
                    continue
        finally:
            os.close(folder_fd)


def serve_sink(folder: Path, host: str = "127.0.0.1", port: int = 2525):
    """Start the sink in a background thread; returns the aiosmtpd Controller (call .stop())."""
    from aiosmtpd.controller import Controller

    controller = Controller(EmlSink(folder), hostname=host, port=port)
    controller.start()
    return controller
