"""Token authentication: who the caller is, and what each responder requires of them.

``TokenAuthMiddleware`` resolves the caller from ``Authorization: Token <token>``
on every request. ``@authenticate(Auth.…)`` on a responder is the one line that
both enforces what the responder requires and records it for the OpenAPI
document (``gridlink/web/openapi.py`` reads it back with ``required_auth``), as
microblog-api's ``@authenticate(token_auth)`` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Any

import falcon

from gridlink.accounts.tokens import Principal
from gridlink.errors import PermissionDenied, Unauthenticated
from gridlink.services import Services

_ATTRIBUTE = "required_auth"


class Auth(Enum):
    """What an operation requires of its caller (``Authorization: Token <token>``)."""

    # Nobody's token is used: the default of a responder without ``@authenticate``.
    ANYONE = "anyone"
    # Public, and a token (if sent) makes the read see the caller's own writes.
    OPTIONAL = "optional"
    REQUIRED = "required"
    ADMIN = "admin"


class TokenAuthMiddleware:
    """Resolve the caller from the token, if one is sent.

    A request without ``Authorization`` is anonymous; a request with a bad one
    is refused even on a public endpoint, so a client never mistakes a dead
    token for a live one.
    """

    def __init__(self, services: Services) -> None:
        self._services = services

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.principal = None
        header = req.get_header("Authorization")
        if header is None:
            return
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "token" or not token:
            raise Unauthenticated("Use the header 'Authorization: Token <token>'.")
        req.context.principal = self._services.token_cache.authenticate(token)


def authenticate(auth: Auth) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Require ``auth`` of the caller before the responder runs, and record it for the document.

    The responder gets the caller as its ``principal`` argument: a
    ``Principal`` under ``REQUIRED`` and ``ADMIN``, ``Principal | None`` under
    ``OPTIONAL``. It is checked before anything else the responder does, so a
    missing token is a 401 (and a non-admin's a 403) whatever the body holds.
    """

    def decorate(responder: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(responder)
        def enforcing(
            resource: Any, req: falcon.Request, resp: falcon.Response, **params: Any
        ) -> None:
            responder(resource, req, resp, principal=_caller(req, auth), **params)

        setattr(enforcing, _ATTRIBUTE, auth)
        return enforcing

    return decorate


def required_auth(responder: Callable[..., Any]) -> Auth:
    """Say what ``responder`` requires of its caller (``ANYONE`` unless ``@authenticate``d)."""
    auth: Auth = getattr(responder, _ATTRIBUTE, Auth.ANYONE)
    return auth


def _caller(req: falcon.Request, auth: Auth) -> Principal | None:
    """Return the caller, or raise 401 (no token) or 403 (not an admin) as ``auth`` requires."""
    principal: Principal | None = req.context.principal
    if auth in (Auth.REQUIRED, Auth.ADMIN) and principal is None:
        raise Unauthenticated()
    if auth is Auth.ADMIN and principal is not None and not principal.is_admin:
        raise PermissionDenied("Only administrators may do that.")
    return principal
