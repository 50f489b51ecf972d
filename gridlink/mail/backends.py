"""Outgoing mail through the backend named by ``GRIDLINK_MAIL_BACKEND``.

Requests never send mail themselves: they queue it in the database
(``gridlink.mail.outbox``), and a poller hands it to one of these backends.
"""

from __future__ import annotations

import smtplib
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from gridlink.settings import MailBackend

FROM_ADDRESS = "Gridlink <no-reply@gridlink.invalid>"


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


def make_mailer(backend: MailBackend) -> Mailer:
    if backend.kind == "file" and backend.directory is not None:
        return FileMailer(backend.directory)
    if backend.kind == "smtp" and backend.host is not None and backend.port is not None:
        return SmtpMailer(backend.host, backend.port)
    return ConsoleMailer()
