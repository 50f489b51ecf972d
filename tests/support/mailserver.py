"""A small real SMTP server for tests: it keeps what it receives, and can hold a client silent.

``SmtpServer.hold_next()`` makes the next connection wait without a greeting
(a mail server that hangs), so a test can do something to the client (kill
it) in the middle of a delivery.
"""

from __future__ import annotations

import socketserver
import threading
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        owner = self.server.owner
        if owner.take_hold():
            owner.held.set()
            owner.release.wait(60)
            return  # close without a word: the client was meant to be gone by now
        self._reply(b"220 test SMTP ready")
        while line := self.rfile.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                self._reply(b"250 test")
            elif verb == b"DATA":
                self._reply(b"354 go ahead")
                owner.receive(self._read_data())
                self._reply(b"250 queued")
            elif verb == b"QUIT":
                self._reply(b"221 bye")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                self._reply(b"250 ok")

    def _read_data(self) -> bytes:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)

    def _reply(self, text: bytes) -> None:
        self.wfile.write(text + b"\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: SmtpServer


class SmtpServer:
    """An SMTP server on a free loopback port; ``messages`` is what it received."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._lock = threading.Lock()
        self._holding = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.messages: list[EmailMessage] = []

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def hold_next(self) -> None:
        """Keep the next connection silent until ``release`` is set."""
        with self._lock:
            self._holding = True

    def take_hold(self) -> bool:
        with self._lock:
            holding, self._holding = self._holding, False
            return holding

    def receive(self, data: bytes) -> None:
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)

    def received_by(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]

    def __enter__(self) -> SmtpServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
