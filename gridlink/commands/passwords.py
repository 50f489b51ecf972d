"""Passwords on the write side: change, reset by mail, and reset confirmation.

Every new password is hashed outside any transaction (no row lock is held
for the fifth of a second a hash takes); the transaction that stores it
checks that nothing it relied on changed meanwhile. Reset tokens are stored
as their SHA-256, used once, and used up by any password change; the mail
that carries one is queued in the transaction that creates it
(``gridlink.mail.outbox``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update

from gridlink.accounts.password_rules import account_words, refuse_weak_password
from gridlink.accounts.throttles import admit_password_reset
from gridlink.accounts.tokens import Principal, hash_token, new_token
from gridlink.commands.sessions import (
    caller,
    confirm_password,
    lock_caller,
    login_throttle,
    revoke_tokens,
    same_text,
)
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import InvalidRequest
from gridlink.mail.outbox import MAIL_TOKEN_LIFETIME
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


def request_password_reset(uow: UnitOfWork, *, email: str, address: str | None) -> None:
    """Mail a single-use reset token to the account with ``email``, if there is one.

    The caller answers the same either way, and as fast: the request is
    counted against the limits per email and per client address before the
    account is looked up (429 for both alike past them), and the mail is
    queued in the outbox, not sent, in the request.
    """
    admit_password_reset(uow.limiter, uow.settings, email, address)
    user = uow.session.scalars(select(User).where(same_text(User.email, email))).one_or_none()
    if user is None:
        return
    reset_token = new_token()
    uow.session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=hash_token(reset_token),
            expires_on=datetime.now(UTC) + MAIL_TOKEN_LIFETIME,
        )
    )
    uow.queue_mail(
        user.email, "Reset your Gridlink password", _reset_mail_body(user.username, reset_token)
    )


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
    throttle, account_id = login_throttle(uow), user.id
    uow.after_commit(lambda: throttle.forget(account_id))


def use_up(uow: UnitOfWork, tokens: type[PasswordReset] | type[EmailChange], user_id: int) -> None:
    """Mark every outstanding mailed token of ``user_id`` in ``tokens`` used."""
    uow.session.execute(
        update(tokens)
        .where(tokens.user_id == user_id, tokens.used_on.is_(None))
        .values(used_on=func.now())
    )


def use_up_mailed_tokens(uow: UnitOfWork, user_id: int) -> None:
    """Mark every outstanding reset and email-change token of ``user_id`` used."""
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


def _reset_mail_body(username: str, reset_token: str) -> str:
    return f"""\
Someone (hopefully you) asked to reset the password of the Gridlink account {username}.

Your reset token, valid for one hour and usable once:

    {reset_token}

Send it with your new password to POST /api/auth/password/reset/confirm/ :

    {{"token": "{reset_token}", "new_password": "..."}}

If you did not ask for this, ignore this mail: your password stays as it is.
"""
