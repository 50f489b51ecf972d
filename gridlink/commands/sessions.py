"""Logging in and out: tokens issued, capped and revoked, sessions ended, the login throttle.

Token cache entries are written only after the commit that makes them true
(see ``gridlink.cache.tokens``): a new token is written through, so it
works on the very next request; a revoked one is marked not valid, so every
server process refuses it at once. Each token is a session its owner can
list and end by its public id; a token lives ``GRIDLINK_TOKEN_TTL_DAYS``
(an admin's ``GRIDLINK_ADMIN_TOKEN_TTL_HOURS``, decided at issue) and ends
sooner once unused for ``GRIDLINK_TOKEN_IDLE_DAYS``.

A login looks the account (and the device it presents) up, reserves the
attempt against the throttle (``gridlink.accounts.throttles``: per account
and client, the client being a device of the account or else the address),
and only then checks the password, outside any transaction; a success gives
the attempt back and answers a device for the next login.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update

from gridlink.accounts.emails import same_email
from gridlink.accounts.events import security_event
from gridlink.accounts.passwords import needs_rehash
from gridlink.accounts.ratelimit import Reservation
from gridlink.accounts.throttles import LoginClient, LoginThrottle, account_key
from gridlink.accounts.tokens import (
    CLIENT_ADDRESS_MAX_LENGTH,
    USER_AGENT_MAX_LENGTH,
    Principal,
    bounded_text,
    hash_token,
    new_token,
)
from gridlink.commands.devices import presented_device, remember_device
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from gridlink.models import AuthToken, LoginDevice, User
from gridlink.settings import Settings
from gridlink.slugs import SESSION_PREFIX, is_slug


@dataclass(frozen=True)
class SignedIn:
    """An account, a token just issued for it and the client's device (given to the client once)."""

    user: User
    token: str
    device: str


def log_in(
    uow: UnitOfWork,
    *,
    login: str,
    password: str,
    address: str | None,
    device: str | None = None,
    user_agent: str | None = None,
) -> SignedIn:
    """Check a username (or email) and password and issue a new token.

    Raise 401 for wrong credentials, the same whether or not the account
    exists, and 429 once the client failed too often for the account (or the
    login as typed, without one); a client without a device of the account
    also once the account's wide limit or its address's is reached.
    """
    throttle = login_throttle(uow)
    # Without a device the address is counted first, before any query: a
    # flood from one address is refused at the cost of one Redis call.
    from_address = None if device else admit_login_address(throttle, address)
    uow.after_database_failure(lambda: throttle.give_back(from_address))
    found = uow.session.execute(
        select(User, LoginDevice.id)
        .outerjoin(LoginDevice, presented_device(device))
        .where(or_(same_text(User.username, login), same_email(User.email, login)))
    ).one_or_none()
    user, device_id = found if found is not None else (None, None)
    user_id = user.id if user else None
    uow.end_reads()
    client = LoginClient(account_key(user_id, login), address, device_id)
    try:
        reservation = throttle.admit(client, address_admitted=from_address is not None)
    except RateLimited:
        throttle.give_back(from_address)  # refused: not an attempt
        security_event("login_throttled", user_id=user_id)
        raise
    uow.after_database_failure(lambda: throttle.give_back(reservation))
    try:
        verified = uow.passwords.verify(user.password_hash if user else None, password)
    except Unavailable:
        throttle.give_back_unchecked(reservation)
        raise
    if not verified:
        security_event("login_failed", user_id=user_id, with_device=client.has_device)
        raise Unauthenticated("The username or password is not correct.")
    assert user is not None  # verify says no without an account
    assert user.password_hash is not None  # verify says no without a password
    if needs_rehash(user.password_hash):
        _rehash(uow, user, password)
    token = issue_token(uow, user, address=address, user_agent=user_agent)
    device = remember_device(uow, user.id, device_id=device_id, device=device)
    uow.after_commit(lambda: throttle.give_back(reservation, from_address))
    uow.after_commit(lambda: throttle.succeeded(client))
    uow.after_commit(
        lambda: security_event("login_succeeded", user_id=user_id, with_device=client.has_device)
    )
    return SignedIn(user, token, device)


def admit_login_address(throttle: LoginThrottle, address: str | None) -> Reservation | None:
    """Count a login attempt from ``address`` (a failure unless given back), or raise 429."""
    try:
        return throttle.admit_address(address)
    except RateLimited:
        security_event("login_throttled", user_id=None)
        raise


def log_out(uow: UnitOfWork, principal: Principal) -> None:
    """Revoke the token the caller used."""
    ended = revoke_tokens(uow, AuthToken.token_hash == principal.token_hash)
    _log_revoked(uow, principal, ended, reason="logout")


def log_out_everywhere(uow: UnitOfWork, principal: Principal) -> None:
    """Revoke every token of the caller, the one used included."""
    ended = revoke_tokens(uow, AuthToken.user_id == principal.user_id)
    _log_revoked(uow, principal, ended, reason="logout_all")


def end_session(uow: UnitOfWork, principal: Principal, *, session_id: str) -> None:
    """Revoke the caller's live token whose public id is ``session_id``; 404 if there is none.

    Another user's session is not found either: ids are not secrets, but
    whether one exists is none of the caller's business.
    """
    ended: list[str] = []
    if is_slug(session_id, SESSION_PREFIX):
        ended = revoke_tokens(
            uow,
            AuthToken.user_id == principal.user_id,
            AuthToken.public_id == session_id,
            *live_token(uow.settings),
        )
    if not ended:
        raise NotFound("There is no such session.")
    _log_revoked(uow, principal, ended, reason="session_ended")


def confirm_password(
    uow: UnitOfWork, principal: Principal, user: User, password: str, *, field: str
) -> None:
    """Raise 400 naming ``field`` unless ``password`` is ``user``'s; call it outside a transaction.

    A 400, not a 401: the token is fine and the client must not drop it; the
    user mistyped a form field. Failures count against the session (the
    token) alone: a stolen token cannot be used to guess the password
    faster, and nobody's failures elsewhere refuse the owner here.
    """
    throttle = login_throttle(uow)
    try:
        reservation = throttle.admit_password_check(principal.token_hash)
    except RateLimited:
        security_event("login_throttled", user_id=user.id, check=field)
        raise
    try:
        verified = uow.passwords.verify(user.password_hash, password)
    except Unavailable:
        throttle.give_back(reservation)
        raise
    if not verified:
        security_event("login_failed", user_id=user.id, check=field)
        raise InvalidRequest(
            "The password is not correct.", fields={field: ["The password is not correct."]}
        )
    throttle.give_back(reservation)


def lock_caller(uow: UnitOfWork, principal: Principal, checked_hash: str | None) -> User:
    """Lock the caller's row; raise 409 if their password changed since it was checked."""
    user = uow.session.scalars(
        select(User)
        .where(User.id == principal.user_id)
        # FOR NO KEY UPDATE: a row that points at the user (the mail poller's
        # reset token) can still be added meanwhile, so neither waits on the other.
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if user is None:
        raise Unauthenticated("The token is not valid.")
    if user.password_hash != checked_hash:
        raise Conflict("The password changed meanwhile; try again.")
    return user


def caller(uow: UnitOfWork, principal: Principal) -> User:
    """The caller's account; 401 if it was deleted since its token was checked."""
    user = uow.session.get(User, principal.user_id)
    if user is None:
        # Deleted since its token was checked: the token went with it.
        raise Unauthenticated("The token is not valid.")
    return user


def issue_token(
    uow: UnitOfWork, user: User, *, address: str | None = None, user_agent: str | None = None
) -> str:
    """Add a token for ``user``, revoking their oldest live ones past the cap per user.

    An admin's token lives ``admin_token_ttl_hours``, anyone else's
    ``token_ttl_days``; ``address`` (as the throttles count the client) and
    ``user_agent`` are kept, cut short, for the sessions list.
    """
    token = new_token()
    issued_on = datetime.now(UTC)
    expires_on = issued_on + token_lifetime(uow.settings, is_admin=user.is_admin)
    principal = principal_of(user, hash_token(token))
    uow.session.add(
        AuthToken(
            user_id=user.id,
            token_hash=principal.token_hash,
            last_used_on=issued_on,
            expires_on=expires_on,
            client_address=bounded_text(address, CLIENT_ADDRESS_MAX_LENGTH),
            user_agent=bounded_text(user_agent, USER_AGENT_MAX_LENGTH),
        )
    )
    uow.session.flush()
    beyond_cap = (
        select(AuthToken.id)
        .where(AuthToken.user_id == user.id, *live_token(uow.settings))
        .order_by(AuthToken.created_on.desc(), AuthToken.id.desc())
        .offset(uow.settings.max_tokens_per_user)
    )
    revoke_tokens(uow, AuthToken.id.in_(beyond_cap.scalar_subquery()))
    uow.after_commit(lambda: uow.token_cache.store(principal, expires_on, issued_on))
    return token


def token_lifetime(settings: Settings, *, is_admin: bool) -> timedelta:
    """How long a token issued now lives in all: shorter for an admin's."""
    if is_admin:
        return timedelta(hours=settings.admin_token_ttl_hours)
    return timedelta(days=settings.token_ttl_days)


def live_token(settings: Settings) -> tuple[ColumnElement[bool], ...]:
    """The conditions a token row meets while it can be used (by the database's clock)."""
    return (
        AuthToken.revoked_on.is_(None),
        AuthToken.expires_on > func.now(),
        AuthToken.last_used_on > func.now() - timedelta(days=settings.token_idle_days),
    )


def revoke_tokens(uow: UnitOfWork, *conditions: ColumnElement[bool]) -> list[str]:
    """Revoke the live tokens matching ``conditions``, in the database and then the cache.

    Return the public ids of the sessions revoked.
    """
    revoked = uow.session.execute(
        update(AuthToken)
        .where(AuthToken.revoked_on.is_(None), *conditions)
        .values(revoked_on=func.now())
        .returning(AuthToken.token_hash, AuthToken.public_id)
    ).all()
    if revoked:
        token_hashes = [token_hash for token_hash, _ in revoked]
        uow.after_commit(lambda: uow.token_cache.store_revoked(token_hashes))
    return [public_id for _, public_id in revoked]


def login_throttle(uow: UnitOfWork) -> LoginThrottle:
    return LoginThrottle(uow.limiter, uow.settings)


def same_text(column: Any, value: str) -> ColumnElement[bool]:
    """Compare ignoring case, the way the unique indexes on ``lower(...)`` do."""
    comparison: ColumnElement[bool] = func.lower(column) == func.lower(value)
    return comparison


def principal_of(user: User, token_hash: bytes) -> Principal:
    return Principal(
        user_id=user.id, username=user.username, is_admin=user.is_admin, token_hash=token_hash
    )


def _log_revoked(uow: UnitOfWork, principal: Principal, ended: list[str], *, reason: str) -> None:
    """Log one ``session_revoked`` event once the revocation is committed."""
    # The session's public id, never the token: it names the session in the list.
    session = ended[0] if len(ended) == 1 else None
    uow.after_commit(
        lambda: security_event(
            "session_revoked",
            user_id=principal.user_id,
            reason=reason,
            sessions=len(ended),
            session=session,
        )
    )


def _rehash(uow: UnitOfWork, user: User, password: str) -> None:
    """Store a hash made with today's parameters, unless the password changed meanwhile."""
    old_hash = user.password_hash
    new_hash = uow.passwords.hash(password)
    uow.session.execute(
        update(User)
        .where(User.id == user.id, User.password_hash == old_hash)
        .values(password_hash=new_hash)
    )
