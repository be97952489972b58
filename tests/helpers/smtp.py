"""SMTP servers the tests talk to: a relay in trouble that answers every connection with 421, and a
sink that keeps what it accepts."""
from __future__ import annotations

import email
import email.policy
import socket
import threading


class RefusingRelay:
    """A relay in trouble: it takes each connection and answers 421 (service not available)."""

    def __init__(self, port: int):
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
            self.connections += 1

    def stop(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (close alone does not)
        except OSError:
            pass  # not listening any more: stopped already
        self._sock.close()
        self._thread.join(timeout=5)


class Sink:
    def __init__(self):
        self.accepted: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.accepted.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"
