"""Token authentication: ``Authorization: Token <token>`` on any request."""

from __future__ import annotations

import falcon

from gridlink.errors import PermissionDenied, Unauthenticated
from gridlink.services import Services
from gridlink.tokens import Principal


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


def require_principal(req: falcon.Request) -> Principal:
    """Return the caller, or raise 401 if the request carries no token."""
    principal: Principal | None = req.context.principal
    if principal is None:
        raise Unauthenticated()
    return principal


def require_admin(req: falcon.Request) -> Principal:
    principal = require_principal(req)
    if not principal.is_admin:
        raise PermissionDenied("Only administrators may do that.")
    return principal
