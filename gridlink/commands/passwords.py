"""Passwords on the write side: change, reset by mail, and reset confirmation.

Every new password is hashed outside any transaction (no row lock is held
for the fifth of a second a hash takes); the transaction that stores it
checks that nothing it relied on changed meanwhile. Reset tokens are stored
as their SHA-256, used once, and used up by any password change. A reset
request queues only the order for a mail (``gridlink.mail.outbox``): the
token is made when the mail is sent (``gridlink.mail.letters``), so it
rests nowhere in plaintext. A changed or reset password is told to the
owner's address.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update

from gridlink.accounts.events import bound_requester, security_event
from gridlink.accounts.password_rules import account_words, refuse_weak_password
from gridlink.accounts.throttles import admit_password_reset
from gridlink.accounts.tokens import Principal, hash_token
from gridlink.commands.sessions import (
    caller,
    confirm_password,
    lock_caller,
    login_throttle,
    revoke_tokens,
)
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import InvalidRequest
from gridlink.mail.letters import password_changed_notice
from gridlink.mail.outbox import cancel_token_mail, password_reset_order
from gridlink.models import AuthToken, EmailChange, PasswordReset, User


def change_password(
    uow: UnitOfWork, principal: Principal, *, current_password: str, new_password: str
) -> None:
    """Set a new password; revoke the caller's other tokens and use up mailed tokens."""
    user = caller(uow, principal)
    checked_hash = user.password_hash
    uow.end_reads()
    confirm_password(uow, principal, user, current_password, field="current_password")
    refuse_weak_password(
        new_password, field="new_password", user_inputs=account_words(user.username, user.email)
    )
    new_hash = uow.passwords.hash(new_password)
    user = lock_caller(uow, principal, checked_hash)
    user.password_hash = new_hash
    user.modified_on = datetime.now(UTC)
    use_up_mailed_tokens(uow, user.id)
    revoke_tokens(
        uow,
        AuthToken.user_id == user.id,
        AuthToken.token_hash != principal.token_hash,
    )
    uow.queue_mail(user.email, *password_changed_notice(user.username, by_reset=False))
    account_id = user.id
    uow.after_commit(lambda: security_event("password_changed", user_id=account_id))


def request_password_reset(uow: UnitOfWork, *, email: str, address: str | None) -> None:
    """Have a single-use reset token mailed to the account with ``email``, if there is one.

    The caller answers the same either way, after the same work: the request
    is counted against the limits per email and per client address (429 for
    both alike past them), then one order is queued in the outbox whether
    or not an account has the email. The poller looks the account up, makes
    the token and logs ``password_reset_requested`` with the account's id.
    """
    admit_password_reset(uow.limiter, uow.settings, email, address)
    uow.queue_token_mail(password_reset_order(email, bound_requester()))


def confirm_password_reset(uow: UnitOfWork, *, token: str, new_password: str) -> None:
    """Set a new password from a mailed reset token and revoke every token of the account.

    Raise 400 if the reset token is unknown, already used or expired. The
    new password is hashed only for a token that is valid, and outside the
    transaction; the token is then taken with a row lock, so of two
    confirmations racing with one token, only one succeeds.
    """
    owner = uow.session.get_one(User, _valid_reset(uow, token, lock=False).user_id)
    uow.end_reads()
    refuse_weak_password(
        new_password, field="new_password", user_inputs=account_words(owner.username, owner.email)
    )
    new_hash = uow.passwords.hash(new_password)
    reset = _valid_reset(uow, token, lock=True)
    user = uow.session.get_one(User, reset.user_id)
    user.password_hash = new_hash
    user.modified_on = datetime.now(UTC)
    use_up_mailed_tokens(uow, user.id)
    revoke_tokens(uow, AuthToken.user_id == user.id)
    uow.queue_mail(user.email, *password_changed_notice(user.username, by_reset=True))
    throttle, account_id = login_throttle(uow), user.id
    uow.after_commit(lambda: throttle.forget(account_id))
    uow.after_commit(lambda: security_event("password_reset", user_id=account_id))


def use_up(uow: UnitOfWork, tokens: type[PasswordReset] | type[EmailChange], user_id: int) -> None:
    """Mark every outstanding mailed token of ``user_id`` in ``tokens`` used."""
    uow.session.execute(
        update(tokens)
        .where(tokens.user_id == user_id, tokens.used_on.is_(None))
        .values(used_on=func.now())
    )


def use_up_mailed_tokens(uow: UnitOfWork, user_id: int) -> None:
    """Mark every outstanding reset and email-change token of ``user_id`` used.

    Reset mails asked for and not sent yet are cancelled first: that waits
    for a poller writing one to commit, so the token it made is used up too.
    """
    cancel_token_mail(uow.session, uow.session.get_one(User, user_id).email)
    use_up(uow, PasswordReset, user_id)
    use_up(uow, EmailChange, user_id)


def _valid_reset(uow: UnitOfWork, token: str, *, lock: bool) -> PasswordReset:
    statement = select(PasswordReset).where(
        PasswordReset.token_hash == hash_token(token),
        PasswordReset.used_on.is_(None),
        PasswordReset.expires_on > func.now(),
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    reset = uow.session.scalars(statement).one_or_none()
    if reset is None:
        raise InvalidRequest(
            "The reset token is not valid.",
            fields={"token": ["Unknown, already used or expired."]},
        )
    return reset
