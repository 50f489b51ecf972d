"""Request parameters several resources share: list paging, idempotency keys, providers."""

from __future__ import annotations

import re
from typing import Any

import falcon

from gridlink.errors import InvalidRequest, NotFound
from gridlink.oidc.provider import ProviderClient
from gridlink.queries.pages import DEFAULT_LIMIT, MAX_LIMIT, PageRequest, unknown_cursor
from gridlink.services import Services
from gridlink.slugs import GRID_PREFIX, LINK_PREFIX, is_slug
from gridlink.web.idempotency import IdempotencyKey

_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]{1,255}$")


def page_request(req: falcon.Request) -> PageRequest:
    """Read ``limit`` (1-100, default 20) and ``starting_after``; 400 if malformed."""
    raw_limit = req.get_param("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not re.fullmatch(r"[0-9]{1,3}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise InvalidRequest(
                "limit must be a whole number from 1 to 100.",
                fields={"limit": ["Must be a whole number from 1 to 100."]},
            )
        limit = int(raw_limit)
    starting_after = req.get_param("starting_after")
    if starting_after is not None and not (
        is_slug(starting_after, GRID_PREFIX) or is_slug(starting_after, LINK_PREFIX)
    ):
        raise unknown_cursor()
    return PageRequest(limit=limit, starting_after=starting_after)


def idempotency_key(req: falcon.Request, body: Any) -> IdempotencyKey | None:
    """Read ``Idempotency-Key`` (1-255 printable ASCII), fingerprinted with the request."""
    key = req.get_header("Idempotency-Key")
    if key is None:
        return None
    if not _PRINTABLE_ASCII.match(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return IdempotencyKey.for_request(key, req.method, req.path, body)


UNKNOWN_PROVIDER = "No provider of this name is configured."


def identity_provider(services: Services, name: str) -> ProviderClient:
    """The configured OpenID provider ``name``; 404 if there is none."""
    provider = services.identity_providers.get(name)
    if provider is None:
        raise NotFound(UNKNOWN_PROVIDER)
    return provider
