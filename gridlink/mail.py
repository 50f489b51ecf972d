"""Outgoing mail through the backend named by ``GRIDLINK_MAIL_BACKEND``."""

from __future__ import annotations

import logging
import queue
import smtplib
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from gridlink.settings import MailBackend

FROM_ADDRESS = "Gridlink <no-reply@gridlink.invalid>"
# Mails waiting to be sent, per process; past this a mail is dropped (and logged)
# rather than let a flood of requests grow memory without bound.
OUTBOX_CAPACITY = 1000

log = logging.getLogger(__name__)


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None: ...


def compose(to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = FROM_ADDRESS
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@gridlink.invalid>"
    message.set_content(body)
    return message


class ConsoleMailer:
    """Print each mail to standard error (the local default)."""

    def send(self, to: str, subject: str, body: str) -> None:
        print(compose(to, subject, body).as_string(), file=sys.stderr, flush=True)


class FileMailer:
    """Write each mail as one ``.eml`` file in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, to: str, subject: str, body: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        message = compose(to, subject, body)
        # Write then rename, so a reader never sees half a mail.
        final = self.directory / f"{uuid.uuid4().hex}.eml"
        partial = final.with_suffix(".part")
        partial.write_bytes(bytes(message))
        partial.rename(final)


class SmtpMailer:
    """Hand each mail to an SMTP server."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def send(self, to: str, subject: str, body: str) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            smtp.send_message(compose(to, subject, body))


class MailOutbox:
    """Send mail on a thread of its own: no request waits for the mail server.

    A reset for a known email then answers as fast as one for an unknown
    email (the answer's timing tells nothing), and a slow or dead SMTP server
    cannot hold request threads. The thread starts on first use, in the
    process that uses it (after gunicorn's fork).
    """

    def __init__(self, mailer: Mailer, capacity: int = OUTBOX_CAPACITY) -> None:
        self.mailer = mailer
        self._queue: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=capacity)
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def send(self, to: str, subject: str, body: str) -> None:
        """Queue a mail; it is sent shortly, in order."""
        self._start()
        try:
            self._queue.put_nowait((to, subject, body))
        except queue.Full:
            log.error("mail outbox full: a mail was dropped")

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued mail has been handed over; tell whether that happened."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="gridlink-mail", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            to, subject, body = self._queue.get()
            try:
                self.mailer.send(to, subject, body)
            except Exception:
                log.exception("mail not sent")
            finally:
                self._queue.task_done()


def make_mailer(backend: MailBackend) -> Mailer:
    if backend.kind == "file" and backend.directory is not None:
        return FileMailer(backend.directory)
    if backend.kind == "smtp" and backend.host is not None and backend.port is not None:
        return SmtpMailer(backend.host, backend.port)
    return ConsoleMailer()
