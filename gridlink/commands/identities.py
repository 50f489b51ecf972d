"""Identities at OpenID providers: signing in, signing up by ticket, linking and unlinking.

Every path starts the same way: the client's code is redeemed at the
provider and its ID token verified (``gridlink.oidc.provider``), outside
any transaction. An identity is (issuer, subject); it is linked to at most
one account, and only by a signed-in owner or by a sign-up it starts:
never by email, since an unverified or recycled address would hand the
account over. So an identity no account has, whose email an account has,
is refused (409): the owner signs in and links it.

Sign-in counts as a login attempt from the client's address (given back on
success) and a ticket's sign-up as a sign-up; every outcome is a security
event.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from gridlink.accounts.emails import same_email
from gridlink.accounts.events import security_event
from gridlink.accounts.throttles import admit_sign_up
from gridlink.accounts.tokens import Principal, hash_token, is_token_form, new_token
from gridlink.commands.accounts import open_account, refuse_taken
from gridlink.commands.devices import remember_device
from gridlink.commands.profiles import lock_profile
from gridlink.commands.sessions import (
    SignedIn,
    admit_login_address,
    caller,
    issue_token,
    login_throttle,
)
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import Conflict, InvalidRequest, NotFound, Unavailable
from gridlink.models import Identity, SignupTicket, User
from gridlink.oidc.provider import (
    ProviderClient,
    ProviderUnreachable,
    TokenRejected,
    VerifiedIdentity,
)
from gridlink.slugs import IDENTITY_PREFIX, is_slug

SIGNUP_TICKET_LIFETIME = timedelta(minutes=10)
_MAX_SUBJECT_LENGTH = 255
_MAX_EMAIL_LENGTH = 254
_NOT_USERNAME = re.compile(r"[^A-Za-z0-9_]+")
_REFUSED = "The provider's code or ID token did not pass verification."


@dataclass(frozen=True)
class Redemption:
    """What the client sends after the browser part: the code and what proves it is theirs."""

    code: str
    code_verifier: str
    redirect_uri: str
    nonce: str


@dataclass(frozen=True)
class SignupOffer:
    """An identity no account has: a ticket to sign up with, and a username to suggest."""

    signup_ticket: str
    suggested_username: str


def sign_in_with_provider(
    uow: UnitOfWork,
    *,
    provider: ProviderClient,
    redemption: Redemption,
    address: str | None,
    user_agent: str | None = None,
) -> SignedIn | SignupOffer:
    """Sign in with the identity the provider vouches for, or offer a sign-up ticket.

    Raise 400 if the code or token fails verification (or the provider
    gives no verified email for a new identity), 409 if an account has the
    identity's email, 503 if the provider cannot be reached.
    """
    throttle = login_throttle(uow)
    reservation = admit_login_address(throttle, address)
    uow.after_database_failure(lambda: throttle.give_back(reservation))
    identity = _verified(provider, redemption, on_outage=lambda: throttle.give_back(reservation))
    linked = uow.session.execute(
        select(User)
        .join(Identity, Identity.user_id == User.id)
        .where(Identity.issuer == identity.issuer, Identity.subject == identity.subject)
    ).scalar_one_or_none()
    if linked is not None:
        token = issue_token(uow, linked, address=address, user_agent=user_agent)
        device = remember_device(uow, linked.id, device_id=None, device=None)
        user_id = linked.id
        uow.after_commit(lambda: throttle.give_back(reservation))
        uow.after_commit(
            lambda: security_event("login_succeeded", user_id=user_id, provider=provider.name)
        )
        return SignedIn(linked, token, device)
    email = _verified_email(identity, provider)
    if uow.session.execute(select(User.id).where(same_email(User.email, email))).first():
        security_event("identity_email_taken", user_id=None, provider=provider.name)
        raise Conflict(
            "An account already uses this email. Sign in to it and link this identity there."
        )
    ticket = new_token()
    uow.session.add(
        SignupTicket(
            ticket_hash=hash_token(ticket),
            provider=provider.name,
            issuer=identity.issuer,
            subject=identity.subject,
            email=email,
            expires_on=datetime.now(UTC) + SIGNUP_TICKET_LIFETIME,
        )
    )
    offer = SignupOffer(ticket, _free_username(uow, identity, email))
    uow.after_commit(lambda: throttle.give_back(reservation))
    uow.after_commit(
        lambda: security_event("signup_ticket_issued", user_id=None, provider=provider.name)
    )
    return offer


def sign_up_with_ticket(
    uow: UnitOfWork,
    *,
    signup_ticket: str,
    username: str,
    address: str | None,
    user_agent: str | None = None,
) -> SignedIn:
    """Create the account a sign-up ticket offered, with ``username`` and no password.

    The ticket is used up by this sign-up alone (its row locked, then
    deleted); a taken username is a 409 that leaves it usable. An unknown,
    used or expired ticket is a 400.
    """
    admit_sign_up(uow.limiter, uow.settings, address)
    ticket = None
    if is_token_form(signup_ticket):
        ticket = uow.session.scalars(
            select(SignupTicket)
            .where(
                SignupTicket.ticket_hash == hash_token(signup_ticket),
                SignupTicket.expires_on > func.now(),
            )
            .with_for_update()
        ).one_or_none()
    if ticket is None:
        security_event("signup_ticket_refused", user_id=None)
        raise InvalidRequest(
            "The sign-up ticket is not valid.",
            fields={"signup_ticket": ["Unknown, already used or expired."]},
        )
    refuse_taken(uow, username=username, email=ticket.email)
    signed_in = open_account(
        uow,
        User(username=username, email=ticket.email, password_hash=None),
        address=address,
        user_agent=user_agent,
    )
    _link(uow, signed_in.user.id, ticket.provider, ticket.issuer, ticket.subject, ticket.email)
    uow.session.delete(ticket)
    user_id = signed_in.user.id
    provider = ticket.provider
    uow.after_commit(lambda: security_event("signed_up", user_id=user_id, provider=provider))
    return signed_in


def link_identity(
    uow: UnitOfWork,
    principal: Principal,
    *,
    provider: ProviderClient,
    redemption: Redemption,
) -> Identity:
    """Link the identity the provider vouches for to the caller's account; return it.

    Raise 409 if it is linked already (to this account or another), 400 if
    the code or token fails verification, 503 if the provider is down.
    """
    # Inside the transaction of the Idempotency-Key, if the request has one (which holds
    # no row yet): a replay must answer the first answer, not redeem a used code again.
    identity = _verified(provider, redemption, on_outage=lambda: None, user_id=principal.user_id)
    lock_profile(uow, principal.user_id)  # the caller's writes in a line
    caller(uow, principal)
    linked = _link(
        uow,
        principal.user_id,
        provider.name,
        identity.issuer,
        identity.subject,
        _bounded_email(identity.email),
    )
    uow.after_commit(
        lambda: security_event("identity_linked", user_id=principal.user_id, provider=provider.name)
    )
    return linked


def unlink_identity(uow: UnitOfWork, principal: Principal, *, identity_id: str) -> None:
    """Unlink the caller's identity ``identity_id``; 404 if none, 409 if it is the only way in."""
    lock_profile(uow, principal.user_id)  # two unlinks at once cannot both pass the check
    user = caller(uow, principal)
    identity = None
    if is_slug(identity_id, IDENTITY_PREFIX):
        identity = uow.session.scalars(
            select(Identity).where(
                Identity.public_id == identity_id, Identity.user_id == principal.user_id
            )
        ).one_or_none()
    if identity is None:
        raise NotFound("There is no such identity.")
    others = uow.session.scalar(
        select(func.count())
        .select_from(Identity)
        .where(Identity.user_id == user.id, Identity.id != identity.id)
    )
    if user.password_hash is None and not others:
        security_event("identity_unlink_refused", user_id=user.id, provider=identity.provider)
        raise Conflict(
            "This identity is the account's only way to sign in: set a password "
            "(by a password reset) or link another identity first."
        )
    provider = identity.provider
    uow.session.delete(identity)
    uow.after_commit(
        lambda: security_event("identity_unlinked", user_id=principal.user_id, provider=provider)
    )


def _verified(
    provider: ProviderClient,
    redemption: Redemption,
    *,
    on_outage: Callable[[], None],
    user_id: int | None = None,
) -> VerifiedIdentity:
    """Redeem the code and verify its ID token; raise 400 or 503 when that fails."""
    try:
        identity = provider.redeem(
            code=redemption.code,
            code_verifier=redemption.code_verifier,
            redirect_uri=redemption.redirect_uri,
            nonce=redemption.nonce,
        )
    except TokenRejected as problem:
        security_event("login_failed", user_id=user_id, provider=provider.name, reason=str(problem))
        raise InvalidRequest(_REFUSED) from None
    except ProviderUnreachable as problem:
        on_outage()  # an outage is not the client's failed attempt
        security_event("identity_provider_unavailable", user_id=user_id, provider=provider.name)
        raise Unavailable(
            "The sign-in provider cannot be reached; try again shortly.",
            retry_after_seconds=max(1, round(problem.retry_after_seconds)),
        ) from None
    if len(identity.subject) > _MAX_SUBJECT_LENGTH:
        security_event("login_failed", user_id=user_id, provider=provider.name, reason="long sub")
        raise InvalidRequest(_REFUSED)
    return identity


def _verified_email(identity: VerifiedIdentity, provider: ProviderClient) -> str:
    """The identity's email, which a new account takes: the provider must have verified it."""
    email = _bounded_email(identity.email)
    if email is None or not identity.email_verified:
        security_event("login_failed", user_id=None, provider=provider.name, reason="no email")
        raise InvalidRequest(
            "The provider gave no verified email for this identity; an account needs one."
        )
    return email


def _bounded_email(email: str | None) -> str | None:
    return email if email is not None and len(email) <= _MAX_EMAIL_LENGTH else None


def _link(
    uow: UnitOfWork, user_id: int, provider: str, issuer: str, subject: str, email: str | None
) -> Identity:
    """Add the identity to ``user_id``'s account; 409 if an account has it already."""
    if uow.session.execute(
        select(Identity.id).where(Identity.issuer == issuer, Identity.subject == subject)
    ).first():
        raise _already_linked(user_id, provider)
    identity = Identity(
        user_id=user_id, provider=provider, issuer=issuer, subject=subject, email=email
    )
    uow.session.add(identity)
    try:
        with uow.session.begin_nested():
            uow.session.flush()
    except IntegrityError:
        # A link of the same identity raced this one.
        raise _already_linked(user_id, provider) from None
    return identity


def _already_linked(user_id: int, provider: str) -> Conflict:
    security_event("identity_link_refused", user_id=user_id, provider=provider)
    return Conflict("This identity is already linked to an account.")


def _free_username(uow: UnitOfWork, identity: VerifiedIdentity, email: str) -> str:
    """Suggest a username no account has, from the provider's username or the email's name."""
    base = _NOT_USERNAME.sub("_", identity.preferred_username or email.split("@")[0])
    base = base.strip("_")[:24] or "user"
    if len(base) < 3:
        base = f"{base}_user"
    candidates = [base, *(f"{base}_{secrets.randbelow(10**5)}" for _ in range(5))]
    taken: set[str] = set(
        uow.session.scalars(
            select(func.lower(User.username)).where(
                func.lower(User.username).in_([name.lower() for name in candidates])
            )
        )
    )
    return next((name for name in candidates if name.lower() not in taken), candidates[-1])
