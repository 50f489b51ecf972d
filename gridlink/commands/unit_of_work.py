"""One transaction on the primary, rolled back unless it commits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gridlink.accounts.passwords import HashSlots
from gridlink.accounts.ratelimit import Limiter
from gridlink.cache import ProfileCache, TokenCache
from gridlink.cache.marks import WriteMarks
from gridlink.db.failures import went_away
from gridlink.mail.outbox import MailPoller, queue_mail, queue_token_mail
from gridlink.models import OutgoingMail
from gridlink.services import Services
from gridlink.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


class UnitOfWork:
    """Run a command's writes in one primary transaction.

    ``with UnitOfWork.from_services(services) as uow: ...; uow.commit()``.
    Leaving the block without ``commit()`` rolls everything back, so an error
    never leaves half a change behind. Work that must follow a successful
    commit (the cache write-through) is queued with ``after_commit``. A
    primary that cannot be reached surfaces as SQLAlchemy's
    ``OperationalError``, which the app answers with 503 ``unavailable``
    (see ``gridlink.errors``).

    A command finds what it may use here, by name: ``session`` (this
    transaction), ``primary`` (for the WAL position after the commit),
    ``settings`` (the limits), ``profile_cache``, ``write_marks``,
    ``token_cache``, ``passwords`` (the hash slots), ``limiter`` (the
    throttles' windows) and ``mail`` (the outbox's poller).
    """

    def __init__(
        self,
        primary: Engine,
        *,
        settings: Settings,
        profile_cache: ProfileCache,
        write_marks: WriteMarks,
        token_cache: TokenCache,
        passwords: HashSlots,
        limiter: Limiter,
        mail: MailPoller,
    ) -> None:
        self.primary = primary
        self.settings = settings
        self.profile_cache = profile_cache
        self.write_marks = write_marks
        self.token_cache = token_cache
        self.passwords = passwords
        self.limiter = limiter
        self.mail = mail
        self.session = Session(primary, expire_on_commit=False, autoflush=True)
        self._after_commit: list[Callable[[], None]] = []
        self._after_database_failure: list[Callable[[], None]] = []
        self._committed = False

    @classmethod
    def from_services(cls, services: Services) -> UnitOfWork:
        """Open a unit of work on the process's primary, with the collaborators commands use."""
        return cls(
            services.primary,
            settings=services.settings,
            profile_cache=services.cache,
            write_marks=services.cache.marks,
            token_cache=services.token_cache,
            passwords=services.passwords,
            limiter=services.limiter,
            mail=services.mail,
        )

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                self.session.rollback()
        except DBAPIError:
            pass  # the connection is already gone; nothing was committed
        finally:
            self.session.close()
        if not self._committed and went_away(exc):
            for action in self._after_database_failure:
                try:
                    action()
                except Exception:
                    log.exception("after-database-failure action failed")

    def end_reads(self) -> None:
        """End the transaction so far, which must only have read: slow work follows.

        A password hash takes a fifth of a second; no transaction (let alone
        a row lock) is held meanwhile. The next statement opens a new one.
        """
        if self.session.new or self.session.dirty or self.session.deleted:
            raise RuntimeError("end_reads() after a write: commit or roll back instead")
        self.session.commit()

    def queue_mail(self, to: str, subject: str, body: str) -> None:
        """Queue a mail in this transaction (``gridlink.mail.outbox``), sent once this commits."""
        queue_mail(self.session, to, subject, body)
        self.after_commit(self.mail.nudge)

    def queue_token_mail(self, order: OutgoingMail) -> None:
        """Queue the order for a token mail: the poller makes the token when it sends it."""
        queue_token_mail(self.session, order)
        self.after_commit(self.mail.nudge)

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit.append(action)

    def after_database_failure(self, action: Callable[[], None]) -> None:
        """Run ``action`` if the command fails because the database went away (a 503).

        What the command counted against the client (a login attempt) is then
        given back: an outage is not the client's failure.
        """
        self._after_database_failure.append(action)

    def commit(self) -> None:
        self.session.commit()
        self._committed = True
        for action in self._after_commit:
            try:
                action()
            except Exception:
                # The write is committed and will be answered 2xx; what follows
                # (cache write-through, read-your-writes mark) is best effort.
                log.exception("after-commit action failed")


def run_command(services: Services, command: Callable[[UnitOfWork], T]) -> T:
    """Run ``command`` in a unit of work of its own and commit; return what it returns."""
    with UnitOfWork.from_services(services) as uow:
        result = command(uow)
        uow.commit()
    return result
