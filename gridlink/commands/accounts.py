"""Accounts on the write side: sign-up, the caller's account, its email, deletion, admins.

Every command runs in the caller's unit of work and returns what the
resource needs to answer. Sign-up is throttled per client address and
globally, and refuses a taken username or email, before it hashes anything.
A new email takes effect only once a token mailed to it is confirmed; the
old address is told when the change is asked for. Asking does the same
work and gets the same answer whether or not another account has the
address (a taken one fails at confirmation), and is throttled per account.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError

from gridlink.accounts.emails import email_key, same_email
from gridlink.accounts.events import security_event
from gridlink.accounts.password_rules import account_words, refuse_weak_password
from gridlink.accounts.throttles import admit_email_change, admit_sign_up
from gridlink.accounts.tokens import Principal, hash_token
from gridlink.commands.devices import remember_device
from gridlink.commands.passwords import use_up, use_up_mailed_tokens
from gridlink.commands.profiles import (
    create_profile,
    lock_profile,
    refresh_profile,
    retire_profile,
)
from gridlink.commands.sessions import (
    SignedIn,
    caller,
    confirm_password,
    issue_token,
    lock_caller,
    revoke_tokens,
    same_text,
)
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import Conflict, FieldErrors, InvalidRequest, NotFound
from gridlink.mail.letters import MAIL_TOKEN_LIFETIME, email_change_notice
from gridlink.mail.outbox import email_confirmation_order
from gridlink.models import AuthToken, EmailChange, User

_TAKEN = {
    "username": "This username is taken.",
    "email": "An account with this email already exists.",
}
# The unique indexes on the folded username and email settle a race two
# sign-ups (or a sign-up and an email change) ran at once.
_UNIQUE_INDEX_FIELDS = {"uq_users_lower_username": "username", "uq_users_lower_email": "email"}


def sign_up(
    uow: UnitOfWork,
    *,
    username: str,
    email: str,
    password: str,
    address: str | None,
    display_name: str = "",
    user_agent: str | None = None,
) -> SignedIn:
    """Create an account, its public profile, its first token and its first device."""
    admit_sign_up(uow.limiter, uow.settings, address)
    refuse_weak_password(password, field="password", user_inputs=account_words(username, email))
    refuse_taken(uow, username=username, email=email)
    uow.end_reads()
    password_hash = uow.passwords.hash(password)
    user = User(
        username=username, email=email, password_hash=password_hash, display_name=display_name
    )
    return open_account(uow, user, address=address, user_agent=user_agent)


def open_account(
    uow: UnitOfWork, user: User, *, address: str | None, user_agent: str | None
) -> SignedIn:
    """Add ``user`` with its public profile, its first token and its first device.

    A username or email taken by a sign-up that raced this one is a 409.
    """
    uow.session.add(user)
    _flush_unique(uow)
    create_profile(uow, user.id)
    token = issue_token(uow, user, address=address, user_agent=user_agent)
    return SignedIn(user, token, remember_device(uow, user.id, device_id=None, device=None))


def update_me(uow: UnitOfWork, principal: Principal, changes: Mapping[str, Any]) -> User:
    """Change the caller's ``display_name``; ask to change their ``email``; return the account.

    A new email needs ``current_password`` (400 naming it if missing or
    wrong); it is mailed a token to confirm with ``confirm_email_change``,
    and the current address is told. Until then the account keeps its email.
    Whether another account has the address is not looked at here.
    """
    user = caller(uow, principal)
    new_email = changes.get("email")
    if new_email is not None and new_email != user.email:
        _request_email_change(uow, principal, user, new_email, changes.get("current_password"))
    lock_profile(uow, principal.user_id)
    user = caller(uow, principal)
    if "display_name" in changes:
        user.display_name = changes["display_name"]
        user.modified_on = datetime.now(UTC)
        refresh_profile(uow, user.id)
    return user


def confirm_email_change(uow: UnitOfWork, principal: Principal, *, token: str) -> User:
    """Switch the caller's email to the one ``token`` was mailed to; return the account.

    Raise 400 if the token is unknown, another account's, used or expired,
    and 409 if another account took the email meanwhile. Reset tokens sent
    to the old address are used up, and every other session of the user ends.
    """
    lock_profile(uow, principal.user_id)
    user = caller(uow, principal)
    change = uow.session.scalars(
        select(EmailChange)
        .where(
            EmailChange.token_hash == hash_token(token),
            EmailChange.user_id == user.id,
            EmailChange.used_on.is_(None),
            EmailChange.expires_on > func.now(),
        )
        .with_for_update()
    ).one_or_none()
    if change is None:
        raise InvalidRequest(
            "The email confirmation token is not valid.",
            fields={"token": ["Unknown, already used or expired."]},
        )
    if email_key(change.new_email) != email_key(user.email):
        refuse_taken(uow, email=change.new_email)
    # Before the switch: it cancels the reset mails still on their way to the old address.
    use_up_mailed_tokens(uow, user.id)
    user.email = change.new_email
    user.modified_on = datetime.now(UTC)
    # Whoever else holds a session may be who the owner is moving away from.
    revoke_tokens(uow, AuthToken.user_id == user.id, AuthToken.token_hash != principal.token_hash)
    _flush_unique(uow)
    account_id = user.id
    uow.after_commit(lambda: security_event("email_changed", user_id=account_id))
    return user


def delete_account(uow: UnitOfWork, principal: Principal, *, password: str) -> None:
    """Delete the caller's account, grids, links and tokens, after checking the password."""
    user = caller(uow, principal)
    checked_hash = user.password_hash
    uow.end_reads()
    confirm_password(uow, principal, user, password, field="password")
    lock_profile(uow, principal.user_id)
    user = lock_caller(uow, principal, checked_hash)
    token_hashes = uow.session.scalars(
        select(AuthToken.token_hash).where(
            AuthToken.user_id == user.id, AuthToken.revoked_on.is_(None)
        )
    ).all()
    retire_profile(uow, user.id)
    # Grids, links, tokens and resets go with the user: ON DELETE CASCADE.
    uow.session.delete(user)
    uow.after_commit(lambda: uow.token_cache.store_revoked(token_hashes))
    account_id = user.id
    uow.after_commit(lambda: security_event("account_deleted", user_id=account_id))


def set_admin(uow: UnitOfWork, *, username: str, is_admin: bool) -> User:
    """Make the account ``username`` an administrator or not; raise 404 if there is none.

    Every token of the user is revoked, even when the flag was already so: a
    token taken before a promotion must not become an admin's, and the next
    login issues a token with the lifetime of the new role.
    """
    user = uow.session.scalars(select(User).where(same_text(User.username, username))).one_or_none()
    if user is None:
        raise NotFound(f"There is no user named {username!r}.")
    lock_profile(uow, user.id)  # one write per user at a time; and read your writes
    user.is_admin = is_admin
    user.modified_on = datetime.now(UTC)
    revoked = revoke_tokens(uow, AuthToken.user_id == user.id)
    event = "user_promoted" if is_admin else "user_demoted"
    user_id = user.id
    uow.after_commit(lambda: security_event(event, user_id=user_id, sessions_revoked=len(revoked)))
    return user


def _request_email_change(
    uow: UnitOfWork, principal: Principal, user: User, new_email: str, password: str | None
) -> None:
    if password is None:
        raise InvalidRequest(
            "Changing the email needs the current password.",
            fields={"current_password": ["Required to change the email."]},
        )
    checked_hash = user.password_hash
    uow.end_reads()
    confirm_password(uow, principal, user, password, field="current_password")
    # Counted once the password is right: each request past this point mails twice.
    admit_email_change(uow.limiter, uow.settings, user.id)
    lock_profile(uow, principal.user_id)
    user = lock_caller(uow, principal, checked_hash)
    use_up(uow, EmailChange, user.id)  # only the newest request can be confirmed
    change = EmailChange(
        user_id=user.id,
        new_email=new_email,
        # No token yet: it is made when its mail is sent (gridlink.mail.letters).
        expires_on=datetime.now(UTC) + MAIL_TOKEN_LIFETIME,
    )
    uow.session.add(change)
    uow.session.flush()
    uow.queue_token_mail(email_confirmation_order(change))
    uow.queue_mail(user.email, *email_change_notice(user.username, new_email))
    account_id = user.id
    uow.after_commit(lambda: security_event("email_change_requested", user_id=account_id))


def refuse_taken(uow: UnitOfWork, *, username: str | None = None, email: str | None = None) -> None:
    """Raise 409 naming each of ``username`` and ``email`` another account holds."""
    checks: dict[str, ColumnElement[bool]] = {}
    if username is not None:
        checks["username"] = same_text(User.username, username)
    if email is not None:
        checks["email"] = same_email(User.email, email)
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
