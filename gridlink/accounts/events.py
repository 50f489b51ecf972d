"""Security events: one JSON log line each, for the incident responder (OWASP ASVS V7).

``security_event("login_failed", user_id=...)`` writes one line on the
``gridlink.security`` logger with the event, the user id where known, the
client address as the throttles see it and the request id. The HTTP edge
binds the last two to the request (``bind_request``), so a command names
only what it knows. Never pass a password, a token or a link that carries
one: the details are logged as they are.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from gridlink.web.logs import log_fields

SECURITY_LOGGER = "gridlink.security"
EVENTS = frozenset(
    {
        "login_succeeded",
        "login_failed",
        "login_throttled",
        "password_changed",
        "password_reset_requested",
        "password_reset",
        "email_change_requested",
        "email_changed",
        "session_revoked",
        "user_promoted",
        "user_demoted",
        "account_deleted",
        # A token's entry in Redis failed its seal: someone wrote into the cache.
        "token_cache_forged",
        # Sign-in with OpenID providers (gridlink/commands/identities.py); a sign-in
        # is login_succeeded or login_failed, with the provider's name.
        "signup_ticket_issued",
        "signup_ticket_refused",
        "signed_up",
        "identity_email_taken",
        "identity_linked",
        "identity_link_refused",
        "identity_unlinked",
        "identity_unlink_refused",
        "identity_provider_unavailable",
    }
)

log = logging.getLogger(SECURITY_LOGGER)


@dataclass(frozen=True)
class Requester:
    """Who asked: the client as the throttles count it, and the request's id."""

    client_address: str | None = None
    request_id: str | None = None


_requester: ContextVar[Requester | None] = ContextVar("gridlink_requester", default=None)


def bind_request(requester: Requester) -> None:
    """Make ``requester`` the one this thread's events name, until the next request binds."""
    _requester.set(requester)


def bound_requester() -> Requester:
    """Who this thread's events name now (nobody, outside a request)."""
    return _requester.get() or Requester()


def security_event(event: str, *, user_id: int | None, **details: str | int | None) -> None:
    """Log ``event`` once, with the user, the client, the request and ``details``."""
    if event not in EVENTS:
        raise ValueError(f"{event!r} is not a security event: add it to EVENTS")
    requester = bound_requester()
    log_fields(
        log,
        event,
        {
            "event": event,
            "user_id": user_id,
            "client_address": requester.client_address,
            "request_id": requester.request_id,
            **details,
        },
    )
