"""SmtpConnection against a real aiosmtpd server on loopback: the classic exchange, RFC 2920
pipelining when the server offers it, refusals at each step, dot-stuffing, and the sink."""
from __future__ import annotations

import email
import email.policy
import os
import pwd
import socket
import threading

import pytest
from aiosmtpd.controller import Controller

from helpers.files import file_mode
from runhub_loader.db.embedded import free_port
from runhub_loader.mail.sink import EmlSink, UnsafeMailFolder, ehlo_responses
from runhub_loader.mail.smtp import SmtpConfig, SmtpConnection

MESSAGE = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: dots\r\n\r\n"
           b"line one\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n")


class Server:
    """Stores what it accepts; answers MAIL or RCPT with a scripted refusal; may offer PIPELINING."""

    def __init__(self, pipelining: bool, refuse: dict[str, str] | None = None):
        self.pipelining = pipelining
        self.refuse = dict(refuse or {})
        self.accepted: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        return ehlo_responses(session, hostname, responses, self.pipelining)

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        if "MAIL" in self.refuse:
            return self.refuse.pop("MAIL")
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if "RCPT" in self.refuse:
            return self.refuse.pop("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if "DATA" in self.refuse:
            return self.refuse.pop("DATA")
        with self.lock:
            self.accepted.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued as X1"


class WriteLog:
    """Wraps the client's socket: records each sendall, so a test sees what went in one write."""

    def __init__(self, sock: socket.socket):
        self._sock, self.writes = sock, []

    def sendall(self, data, *args):
        self.writes.append(bytes(data))
        return self._sock.sendall(data, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


@pytest.fixture
def serve():
    controllers = []

    def start(handler):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        controllers.append(controller)
        return SmtpConfig("127.0.0.1", controller.port)

    yield start
    for controller in controllers:
        controller.stop()


def opened(config: SmtpConfig) -> tuple[SmtpConnection, WriteLog]:
    conn = SmtpConnection(config)
    conn._smtp = conn._open()
    conn._smtp.ehlo_or_helo_if_needed()
    log = conn._smtp.sock = WriteLog(conn._smtp.sock)
    return conn, log


@pytest.mark.parametrize("pipelining", [False, True], ids=["classic", "pipelining"])
def test_a_message_is_delivered_as_given_dots_and_all(serve, pipelining):
    server = Server(pipelining)
    conn, log = opened(serve(server))
    outcome = conn.send(MESSAGE, "a@example.com", "b@example.com")
    assert (outcome.accepted, outcome.code, outcome.reply) == (True, 250, "2.0.0 queued as X1")
    assert server.accepted == [("a@example.com", ["b@example.com"], MESSAGE)]
    commands = [w for w in log.writes if not w.startswith(b"From:")]
    if pipelining:  # MAIL, RCPT and DATA in one write; then the message
        assert commands[0] == b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        assert len(log.writes) == 2
    else:
        assert [c.split(b":")[0].split(b"\r")[0].lower() for c in commands[:3]] == [b"mail from", b"rcpt to", b"data"]
    conn.close()


@pytest.mark.parametrize("pipelining", [False, True], ids=["classic", "pipelining"])
@pytest.mark.parametrize("step,reply,code", [("MAIL", "451 4.3.0 try later", 451),
                                             ("RCPT", "550 5.1.1 no such user", 550),
                                             ("DATA", "552 5.3.4 too big", 552)])
def test_a_refusal_at_any_step_is_the_verdict_and_the_session_goes_on(serve, pipelining, step, reply, code):
    server = Server(pipelining, refuse={step: reply})
    conn, _ = opened(serve(server))
    refused = conn.send(MESSAGE, "a@example.com", "b@example.com")
    assert (refused.accepted, refused.code, refused.reply) == (False, code, reply[4:])
    assert server.accepted == []
    again = conn.send(MESSAGE, "a@example.com", "c@example.com")  # same session, after RSET
    assert again.accepted and server.accepted == [("a@example.com", ["c@example.com"], MESSAGE)]
    conn.close()


def test_the_sink_offers_pipelining_and_stores_each_mail(serve, tmp_path):
    config = serve(EmlSink(tmp_path))
    conn, log = opened(config)
    assert conn._smtp.has_extn("pipelining")
    for rcpt in ("x@example.com", "y@example.com"):
        assert conn.send(MESSAGE, "a@example.com", rcpt).accepted
    conn.close()
    stored = sorted(tmp_path.glob("*.eml"))
    assert len(stored) == 2 and all(p.read_bytes() == MESSAGE for p in stored)
    assert email.message_from_bytes(stored[0].read_bytes(), policy=email.policy.default)["Subject"] == "dots"
    assert len(log.writes) == 5 and log.writes[-1] == b"quit\r\n"  # two writes a mail, then QUIT


def test_a_dropped_connection_is_an_outcome_without_a_code_and_the_next_send_reconnects(serve):
    server = Server(True)
    config = serve(server)
    conn, _ = opened(config)
    conn._smtp.sock.shutdown(socket.SHUT_RDWR)  # the server (or the network) dropped it
    lost = conn.send(MESSAGE, "a@example.com", "b@example.com")
    assert not lost.accepted and lost.code is None
    assert conn.send(MESSAGE, "a@example.com", "b@example.com").accepted
    assert len(server.accepted) == 1
    conn.close()


# -- the sink's mail is nobody else's to read --------------------------------------------------------

def test_the_sinks_mail_is_private_whatever_the_umask(serve, tmp_path, umask_022):
    folder = tmp_path / "home" / "mail"
    conn, _ = opened(serve(EmlSink(folder)))
    for rcpt in ("x@example.com", "y@example.com"):
        assert conn.send(MESSAGE, "a@example.com", rcpt).accepted
    conn.close()
    stored = sorted(folder.glob("*.eml"))
    assert file_mode(folder) == 0o700
    assert len(stored) == 2 and [file_mode(p) for p in stored] == [0o600, 0o600]


def test_a_mail_folder_an_older_version_made_is_made_private(tmp_path, umask_022):
    folder = tmp_path / "mail"
    folder.mkdir(mode=0o755)
    EmlSink(folder)
    assert file_mode(folder) == 0o700


def test_a_sink_restarted_within_the_second_keeps_the_earlier_mail(tmp_path):
    first, second = EmlSink(tmp_path), EmlSink(tmp_path)
    stored = [first.store(b"one"), second.store(b"two")]
    assert stored[0] != stored[1] and [p.read_bytes() for p in stored] == [b"one", b"two"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")
def test_a_mail_folder_someone_else_owns_is_refused(tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(UnsafeMailFolder, match=f"refusing to store mail in {folder}: it belongs to nobody"):
        EmlSink(folder)
    assert file_mode(folder) == 0o755 and list(folder.iterdir()) == []


def test_a_mail_folder_swapped_for_a_symlink_gets_no_mail(serve, tmp_path):
    """Whoever owns the folder's parent (the server's user owns <home>) may swap it at any time."""
    target = tmp_path / "etc"
    target.mkdir(mode=0o755)
    folder = tmp_path / "home" / "mail"
    folder.parent.mkdir()
    folder.symlink_to(target)
    with pytest.raises(UnsafeMailFolder, match=f"refusing to store mail in {folder}: it is a symlink"):
        EmlSink(folder)
    folder.unlink()
    conn, _ = opened(serve(EmlSink(folder)))  # a real folder when the sink starts...
    folder.rename(tmp_path / "moved")
    folder.symlink_to(target)  # ...swapped before the mail arrives
    refused = conn.send(MESSAGE, "a@example.com", "b@example.com")
    conn.close()
    assert not refused.accepted
    assert list(target.iterdir()) == [] and file_mode(target) == 0o755
