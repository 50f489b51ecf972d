"""Durable mail: queued in the transaction that decides to send it, delivered by a poller.

``queue_mail`` adds a written message to ``mail_outbox`` inside the
caller's transaction, and ``queue_token_mail`` the order for a mail that
carries a token (``password_reset_order``, ``email_confirmation_order``),
so a mail is queued with what decided it or not at all. A token mail is
written, and its token made, only when it is sent (``gridlink.mail.letters``):
no usable token rests in the outbox. ``deliver_pending_mail`` takes rows
with ``FOR UPDATE SKIP LOCKED`` and claims each with an advisory lock
(several processes drain one outbox without sending a mail twice at once),
writes it and commits its token's hash, sends it, and deletes it.

Delivery is **at least once**: a process that dies before the row is
deleted leaves it, and the mail is sent again, with a fresh token if it
carries one. A token whose mail was never sent is known to no one; one
that was sent still works. A mail older than the tokens it carries can use
is dropped (and logged) instead: it could only deliver a dead token.

``MailPoller`` runs delivery on a thread of each server process; a process
that dies leaves its rows to the others.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, exists, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gridlink.accounts.emails import same_email
from gridlink.accounts.events import Requester, bind_request, security_event
from gridlink.mail.backends import Mailer
from gridlink.mail.letters import (
    CONFIRMATION_ORDER,
    MAIL_TOKEN_LIFETIME,
    RESET_ORDER,
    Letter,
    write_letter,
)
from gridlink.models import EmailChange, OutgoingMail

DELIVERY_BATCH = 50
# A process delivers the mail it queues at once (``MailPoller.nudge``): the poll
# only finds what a process that died left, and what a mail server refused.
POLL_INTERVAL_SECONDS = 5.0
# Whether anything is queued: one cheap statement, before the claiming ones.
_ANY_QUEUED = select(exists().where(OutgoingMail.id.is_not(None)))

log = logging.getLogger(__name__)


def queue_mail(session: Session, to: str, subject: str, body: str) -> None:
    """Add a written mail to the outbox in ``session``'s transaction: sent only if it commits.

    Only for mails that grant nothing: a token goes through ``queue_token_mail``.
    """
    session.add(OutgoingMail(to_address=to, subject=subject, body=body))


def queue_token_mail(session: Session, order: OutgoingMail) -> None:
    """Add the order for a token mail to the outbox in ``session``'s transaction."""
    session.add(order)


def password_reset_order(email: str, requester: Requester) -> OutgoingMail:
    """Order a reset mail to the account with ``email``, if one has it when it is sent."""
    return OutgoingMail(
        kind=RESET_ORDER,
        to_address=email,
        client_address=requester.client_address,
        request_id=requester.request_id,
    )


def email_confirmation_order(change: EmailChange) -> OutgoingMail:
    """Order the mail that confirms ``change`` (flushed: it needs its id)."""
    return OutgoingMail(
        kind=CONFIRMATION_ORDER, to_address=change.new_email, email_change_id=change.id
    )


def cancel_token_mail(session: Session, email: str) -> None:
    """Drop the reset orders for ``email`` not sent yet: what asked for them is superseded.

    Run it before using up the tokens already made: it waits for a poller
    writing one of them to commit its token, so that token is there to be used up.
    """
    session.execute(
        delete(OutgoingMail).where(
            OutgoingMail.kind == RESET_ORDER, same_email(OutgoingMail.to_address, email)
        )
    )


def deliver_pending_mail(
    engine: Engine,
    mailer: Mailer,
    limit: int = DELIVERY_BATCH,
    max_age: timedelta = MAIL_TOKEN_LIFETIME,
) -> int:
    """Deliver up to ``limit`` queued mails, one at a time; return how many left the outbox.

    A mail the backend refuses stays queued for the next round (logged); one
    older than ``max_age`` is deleted unsent (logged), and so is an order
    with nothing left to send (no account has the email; the change it
    confirms was superseded).
    """
    handled = 0
    passed: list[int] = []  # refused by the backend, or being sent by another process
    # One connection for the round: the claim on the mail being sent lives in its session.
    with engine.connect() as connection:
        if not connection.execute(_ANY_QUEUED).scalar():
            return 0  # every worker polls an empty outbox most of the time
        connection.rollback()  # the claims begin transactions of their own
        for _ in range(limit):
            outcome = _deliver_next(connection, mailer, passed, max_age)
            if outcome is None:
                break
            handled += outcome
    return handled


def _deliver_next(
    connection: Connection, mailer: Mailer, passed: list[int], max_age: timedelta
) -> bool | None:
    """Deliver the oldest mail no one else is sending: True if it left the outbox, None if none.

    The first transaction claims the row (an advisory lock of this
    connection's session, held until the mail is sent), writes the letter and
    commits the token's hash; the mail is sent with no transaction open (no
    lock waits on the mail server); the second deletes the row. A process
    that dies anywhere in this loses its claim with its connection, and the
    row, still queued, is sent by another with a fresh token.
    """
    # A session per mail: nothing read for one mail (an account's email) is trusted
    # for the next. Not expired on commit: the row is still read once it is gone.
    with Session(bind=connection, expire_on_commit=False) as session:
        claimed: int | None = None
        try:
            with session.begin():
                mail = session.scalars(
                    select(OutgoingMail)
                    .where(OutgoingMail.id.not_in(passed))
                    .order_by(OutgoingMail.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).one_or_none()
                if mail is None:
                    return None
                if not session.scalar(select(func.pg_try_advisory_lock(*_claim(mail.id)))):
                    passed.append(mail.id)
                    return False
                claimed = mail.id
                letter = _write(session, mail, max_age)
                if letter is None:
                    session.delete(mail)
            if letter is not None:
                try:
                    mailer.send(letter.to, letter.subject, letter.body)
                except Exception:
                    # Its token, never sent, is known to no one: the retry makes another.
                    log.exception("mail not sent; it stays queued")
                    passed.append(mail.id)
                    return False
                with session.begin():
                    session.execute(delete(OutgoingMail).where(OutgoingMail.id == mail.id))
        finally:
            if claimed is not None:
                _release(session, claimed)
    _delivered(mail, letter)
    return True


# pg_try_advisory_lock's keys for "this mail is being sent": b"mail", and the row's id.
_CLAIM_CLASS = int.from_bytes(b"mail", "big")


def _claim(mail_id: int) -> tuple[int, int]:
    # The second key is an int4: ids past it wrap, and a clash only delays a mail a round.
    return _CLAIM_CLASS, mail_id % 2**31


def _release(session: Session, mail_id: int) -> None:
    try:
        with session.begin():
            session.execute(select(func.pg_advisory_unlock(*_claim(mail_id))))
    except DBAPIError:
        log.warning("mail claim not released: the connection is gone, and the claim with it")


def _write(session: Session, mail: OutgoingMail, max_age: timedelta) -> Letter | None:
    """Write ``mail`` (making its token, if it carries one); None: nothing to send any more."""
    if mail.created_on < datetime.now(UTC) - max_age:
        log.warning("mail dropped unsent: older than the tokens it carries")
        return None
    return write_letter(session, mail)


def _delivered(mail: OutgoingMail, letter: Letter | None) -> None:
    """Log a reset request's security event, now that it is known whose account it was."""
    if mail.kind == RESET_ORDER:
        # Logged here, not when asked: the request itself does not look the account up.
        bind_request(Requester(mail.client_address, mail.request_id))
        try:
            account_id = letter.account_id if letter is not None else None
            security_event("password_reset_requested", user_id=account_id)
        finally:
            bind_request(Requester())


class MailPoller:
    """Deliver the outbox from a thread of this process: every few seconds, and when nudged."""

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
        """Deliver what is queued, on the caller's thread; return how many left the outbox."""
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
