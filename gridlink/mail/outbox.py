"""Durable mail: queued in the transaction that decides to send it, delivered by a poller.

``queue_mail`` adds a row to ``mail_outbox`` inside the caller's transaction,
so a reset token and the mail that carries it are committed together or not
at all. ``deliver_pending_mail`` takes rows with ``FOR UPDATE SKIP LOCKED``
(several processes drain one outbox without sending a mail twice at once),
sends each and deletes it in the same transaction.

Delivery is **at least once**: a process that dies after the mail server
took a mail but before its transaction committed leaves the row, and the
mail is sent again. A mail older than the tokens it carries can use is
dropped (and logged) instead: it could only deliver a dead token.

``MailPoller`` runs delivery on a thread of each server process; a process
that dies leaves its rows to the others.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gridlink.mail.backends import Mailer
from gridlink.models import OutgoingMail

# Reset and email-change tokens live this long, and so does the mail carrying one.
MAIL_TOKEN_LIFETIME = timedelta(hours=1)
DELIVERY_BATCH = 50
POLL_INTERVAL_SECONDS = 1.0

log = logging.getLogger(__name__)


def queue_mail(session: Session, to: str, subject: str, body: str) -> None:
    """Add a mail to the outbox in ``session``'s transaction: sent only if it commits."""
    session.add(OutgoingMail(to_address=to, subject=subject, body=body))


def deliver_pending_mail(
    engine: Engine,
    mailer: Mailer,
    limit: int = DELIVERY_BATCH,
    max_age: timedelta = MAIL_TOKEN_LIFETIME,
) -> int:
    """Send up to ``limit`` queued mails, one transaction each; return how many were sent.

    A mail the backend refuses stays queued for the next round (logged); one
    older than ``max_age`` is deleted unsent (logged).
    """
    sent = 0
    failed: list[int] = []
    with Session(engine) as session:
        for _ in range(limit):
            with session.begin():
                mail = session.scalars(
                    select(OutgoingMail)
                    .where(OutgoingMail.id.not_in(failed))
                    .order_by(OutgoingMail.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).one_or_none()
                if mail is None:
                    break
                if mail.created_on < datetime.now(UTC) - max_age:
                    log.warning("mail dropped unsent: older than the tokens it carries")
                    session.delete(mail)
                    continue
                try:
                    mailer.send(mail.to_address, mail.subject, mail.body)
                except Exception:
                    log.exception("mail not sent; it stays queued")
                    failed.append(mail.id)
                    continue
                session.delete(mail)
                sent += 1
    return sent


class MailPoller:
    """Deliver the outbox from a thread of this process: every second, and when nudged."""

    def __init__(
        self, engine: Engine, mailer: Mailer, interval: float = POLL_INTERVAL_SECONDS
    ) -> None:
        self.engine = engine
        self.mailer = mailer
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread in this process if it is not running (after gunicorn's fork)."""
        with self._start_lock:
            if self._stopping.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="gridlink-mail", daemon=True)
            self._thread.start()

    def nudge(self) -> None:
        """Deliver soon: a mail was just committed."""
        self.start()
        self._wake.set()

    def deliver_now(self) -> int:
        """Deliver what is queued, on the caller's thread; return how many were sent."""
        return deliver_pending_mail(self.engine, self.mailer)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                while deliver_pending_mail(self.engine, self.mailer) == DELIVERY_BATCH:
                    pass
                failing = False
            except Exception as problem:
                if not failing:  # once per outage, not once a second
                    log.warning("mail delivery paused: %s", type(problem).__name__)
                failing = True
            self._wake.wait(self._interval)
