"""Accounts on the write side: sign-up, login and tokens, passwords, the caller's account.

Each command is one transaction on the primary. Token cache entries are
written only after the commit that makes them true (see
``gridlink.queries.tokens``): a new token is written through, so it works on
the very next request; a revoked one is marked not valid, so every server
process refuses it at once.

Passwords are checked in constant time whether or not the account exists
(``gridlink.passwords``), and every wrong password, at login or when
confirming a change, counts against the account's login throttle.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from gridlink.commands.profiles import (
    create_profile,
    lock_profile,
    refresh_profile,
    retire_profile,
)
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import Conflict, FieldErrors, InvalidRequest, NotFound, Unauthenticated
from gridlink.models import AuthToken, PasswordReset, User
from gridlink.passwords import hash_password, needs_rehash, verify_password
from gridlink.queries.tokens import cache_revoked_tokens, cache_token
from gridlink.ratelimit import LoginThrottle, PasswordResetThrottle
from gridlink.services import Services
from gridlink.tokens import Principal, hash_token, new_token

PASSWORD_RESET_LIFETIME = timedelta(hours=1)

_TAKEN = {
    "username": "This username is taken.",
    "email": "An account with this email already exists.",
}
# The unique indexes on lower(username) and lower(email) settle a race two
# sign-ups (or a sign-up and an email change) ran at once.
_UNIQUE_INDEX_FIELDS = {"uq_users_lower_username": "username", "uq_users_lower_email": "email"}


@dataclass(frozen=True)
class SignedIn:
    """An account and a token just issued for it (given to the client once)."""

    user: User
    token: str


def sign_up(
    services: Services, *, username: str, email: str, password: str, display_name: str = ""
) -> SignedIn:
    """Create an account, its public profile and its first token."""
    password_hash = hash_password(password)  # slow on purpose: before the transaction
    with UnitOfWork(services) as uow:
        _refuse_taken(uow, username=username, email=email)
        user = User(
            username=username, email=email, password_hash=password_hash, display_name=display_name
        )
        uow.session.add(user)
        _flush_unique(uow)
        create_profile(uow, user.id)
        token = _issue_token(uow, user)
        uow.commit()
    return SignedIn(user, token)


def log_in(services: Services, *, login: str, password: str, address: str | None) -> SignedIn:
    """Check a username (or email) and password and issue a new token.

    Raise 401 for wrong credentials, the same whether or not the account
    exists, and 429 once the login or the client address failed too often.
    """
    throttle = LoginThrottle(services.redis, services.settings)
    throttle.check(login, address)
    with UnitOfWork(services) as uow:
        user = uow.session.scalars(
            select(User).where(or_(_same_text(User.username, login), _same_text(User.email, login)))
        ).one_or_none()
        if not verify_password(user.password_hash if user else None, password):
            throttle.record_failure(login, address)
            raise Unauthenticated("The username or password is not correct.")
        assert user is not None  # verify_password says no without an account
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        token = _issue_token(uow, user)
        uow.commit()
    throttle.forget(login)
    return SignedIn(user, token)


def log_out(services: Services, principal: Principal) -> None:
    """Revoke the token the caller used."""
    with UnitOfWork(services) as uow:
        _revoke_tokens(uow, AuthToken.token_hash == principal.token_hash)
        uow.commit()


def log_out_everywhere(services: Services, principal: Principal) -> None:
    """Revoke every token of the caller, the one used included."""
    with UnitOfWork(services) as uow:
        _revoke_tokens(uow, AuthToken.user_id == principal.user_id)
        uow.commit()


def change_password(
    services: Services, principal: Principal, *, current_password: str, new_password: str
) -> None:
    """Set a new password and revoke every token of the caller but the one used."""
    with UnitOfWork(services) as uow:
        user = _caller(uow, principal)
        _confirm_password(services, user, current_password, field="current_password")
        user.password_hash = hash_password(new_password)
        user.modified_on = datetime.now(UTC)
        _revoke_tokens(
            uow,
            AuthToken.user_id == user.id,
            AuthToken.token_hash != principal.token_hash,
        )
        uow.commit()


def request_password_reset(services: Services, *, email: str, address: str | None) -> None:
    """Mail a single-use reset token to the account with ``email``, if there is one.

    The caller answers the same either way, and as fast: the request is
    counted against the limits per email and per client address before the
    account is looked up (429 for both alike past them), and the mail is
    queued, not sent, in the request (``gridlink.mail.MailOutbox``).
    """
    PasswordResetThrottle(services.redis, services.settings).admit(email, address)
    reset_token = new_token()
    with UnitOfWork(services) as uow:
        user = uow.session.scalars(select(User).where(_same_text(User.email, email))).one_or_none()
        if user is None:
            return
        uow.session.add(
            PasswordReset(
                user_id=user.id,
                token_hash=hash_token(reset_token),
                expires_on=datetime.now(UTC) + PASSWORD_RESET_LIFETIME,
            )
        )
        mail_to, username = user.email, user.username
        # After the commit: a failure to send is logged and the answer is still 202.
        uow.after_commit(
            lambda: services.mailer.send(
                mail_to, "Reset your Gridlink password", _reset_mail_body(username, reset_token)
            )
        )
        uow.commit()


def confirm_password_reset(services: Services, *, token: str, new_password: str) -> None:
    """Set a new password from a mailed reset token and revoke every token of the account.

    Raise 400 if the reset token is unknown, already used or expired.
    """
    with UnitOfWork(services) as uow:
        # FOR UPDATE: of two confirmations racing with one token, the second
        # waits, then no longer finds it unused.
        reset = uow.session.scalars(
            select(PasswordReset)
            .where(
                PasswordReset.token_hash == hash_token(token),
                PasswordReset.used_on.is_(None),
                PasswordReset.expires_on > func.now(),
            )
            .with_for_update()
        ).one_or_none()
        if reset is None:
            raise InvalidRequest(
                "The reset token is not valid.",
                fields={"token": ["Unknown, already used or expired."]},
            )
        user = uow.session.get_one(User, reset.user_id)
        user.password_hash = hash_password(new_password)
        user.modified_on = datetime.now(UTC)
        _use_up_password_resets(uow, user.id)
        _revoke_tokens(uow, AuthToken.user_id == user.id)
        uow.commit()
    LoginThrottle(services.redis, services.settings).forget(user.username, user.email)


def update_me(services: Services, principal: Principal, changes: Mapping[str, Any]) -> User:
    """Change the caller's ``display_name`` and/or ``email``; return the account."""
    with UnitOfWork(services) as uow:
        lock_profile(uow, principal.user_id)
        user = _caller(uow, principal)
        email = changes.get("email")
        if email is not None and email != user.email:
            if email.lower() != user.email.lower():
                _refuse_taken(uow, email=email)
            user.email = email
            # Reset tokens mailed to the old address must not outlive the change.
            _use_up_password_resets(uow, user.id)
        if "display_name" in changes:
            user.display_name = changes["display_name"]
        if changes:
            user.modified_on = datetime.now(UTC)
        _flush_unique(uow)
        if "display_name" in changes:
            refresh_profile(uow, user.id)
        uow.commit()
    return user


def delete_account(services: Services, principal: Principal, *, password: str) -> None:
    """Delete the caller's account, grids, links and tokens, after checking the password."""
    with UnitOfWork(services) as uow:
        lock_profile(uow, principal.user_id)
        user = _caller(uow, principal)
        _confirm_password(services, user, password, field="password")
        token_hashes = uow.session.scalars(
            select(AuthToken.token_hash).where(
                AuthToken.user_id == user.id, AuthToken.revoked_on.is_(None)
            )
        ).all()
        retire_profile(uow, user.id)
        # Grids, links, tokens and resets go with the user: ON DELETE CASCADE.
        uow.session.delete(user)
        uow.after_commit(lambda: cache_revoked_tokens(services, token_hashes))
        uow.commit()


def set_admin(services: Services, *, username: str, is_admin: bool) -> User:
    """Make the account ``username`` an administrator or not; raise 404 if there is none."""
    with UnitOfWork(services) as uow:
        user = uow.session.scalars(
            select(User).where(_same_text(User.username, username))
        ).one_or_none()
        if user is None:
            raise NotFound(f"There is no user named {username!r}.")
        lock_profile(uow, user.id)  # one write per user at a time; and read your writes
        user.is_admin = is_admin
        user.modified_on = datetime.now(UTC)
        live_tokens = uow.session.execute(
            select(AuthToken.token_hash, AuthToken.expires_on).where(
                AuthToken.user_id == user.id,
                AuthToken.revoked_on.is_(None),
                AuthToken.expires_on > func.now(),
            )
        ).all()
        # Overwrite the cached callers: the change applies to tokens already in use.
        for token_hash, expires_on in live_tokens:
            principal = _principal(user, token_hash)
            uow.after_commit(functools.partial(cache_token, services, principal, expires_on))
        uow.commit()
    return user


def _issue_token(uow: UnitOfWork, user: User) -> str:
    token = new_token()
    expires_on = datetime.now(UTC) + timedelta(days=uow.services.settings.token_ttl_days)
    principal = _principal(user, hash_token(token))
    uow.session.add(
        AuthToken(user_id=user.id, token_hash=principal.token_hash, expires_on=expires_on)
    )
    uow.after_commit(lambda: cache_token(uow.services, principal, expires_on))
    return token


def _revoke_tokens(uow: UnitOfWork, *conditions: ColumnElement[bool]) -> None:
    """Revoke the live tokens matching ``conditions``, in the database and then the cache."""
    revoked = uow.session.scalars(
        update(AuthToken)
        .where(AuthToken.revoked_on.is_(None), *conditions)
        .values(revoked_on=func.now())
        .returning(AuthToken.token_hash)
    ).all()
    uow.after_commit(lambda: cache_revoked_tokens(uow.services, revoked))


def _use_up_password_resets(uow: UnitOfWork, user_id: int) -> None:
    uow.session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user_id, PasswordReset.used_on.is_(None))
        .values(used_on=func.now())
    )


def _caller(uow: UnitOfWork, principal: Principal) -> User:
    user = uow.session.get(User, principal.user_id)
    if user is None:
        # Deleted since its token was checked: the token went with it.
        raise Unauthenticated("The token is not valid.")
    return user


def _confirm_password(services: Services, user: User, password: str, *, field: str) -> None:
    """Raise 400 naming ``field`` unless ``password`` is the caller's.

    A 400, not a 401: the token is fine and the client must not drop it; the
    user mistyped a form field. Failures count against the login throttle, so
    a stolen token cannot be used to guess the password either.
    """
    throttle = LoginThrottle(services.redis, services.settings)
    throttle.check(user.username)
    if not verify_password(user.password_hash, password):
        throttle.record_failure(user.username)
        raise InvalidRequest(
            "The password is not correct.", fields={field: ["The password is not correct."]}
        )


def _refuse_taken(
    uow: UnitOfWork, *, username: str | None = None, email: str | None = None
) -> None:
    """Raise 409 naming each of ``username`` and ``email`` another account holds."""
    checks: dict[str, ColumnElement[bool]] = {}
    if username is not None:
        checks["username"] = _same_text(User.username, username)
    if email is not None:
        checks["email"] = _same_text(User.email, email)
    labelled = [check.label(name) for name, check in checks.items()]
    rows = uow.session.execute(select(*labelled).where(or_(*checks.values()))).mappings()
    taken = {name for row in rows for name in checks if row[name]}
    if taken:
        raise _conflict(taken)


def _flush_unique(uow: UnitOfWork) -> None:
    """Flush, turning a lost race on a unique username or email into 409."""
    try:
        uow.session.flush()
    except IntegrityError as problem:
        index = getattr(getattr(problem.orig, "diag", None), "constraint_name", None)
        field = _UNIQUE_INDEX_FIELDS.get(index or "")
        if field is None:
            raise
        raise _conflict({field}) from None


def _conflict(taken: set[str]) -> Conflict:
    fields: FieldErrors = {name: [_TAKEN[name]] for name in sorted(taken)}
    return Conflict(
        "An account already uses this " + " and ".join(sorted(taken)) + ".", fields=fields
    )


def _same_text(column: Any, value: str) -> ColumnElement[bool]:
    """Compare ignoring case, the way the unique indexes on ``lower(...)`` do."""
    comparison: ColumnElement[bool] = func.lower(column) == func.lower(value)
    return comparison


def _principal(user: User, token_hash: bytes) -> Principal:
    return Principal(
        user_id=user.id, username=user.username, is_admin=user.is_admin, token_hash=token_hash
    )


def _reset_mail_body(username: str, reset_token: str) -> str:
    return f"""\
Someone (hopefully you) asked to reset the password of the Gridlink account {username}.

Your reset token, valid for one hour and usable once:

    {reset_token}

Send it with your new password to POST /api/auth/password/reset/confirm/ :

    {{"token": "{reset_token}", "new_password": "..."}}

If you did not ask for this, ignore this mail: your password stays as it is.
"""
