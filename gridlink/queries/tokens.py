"""Look up the caller behind a token."""

from __future__ import annotations

from sqlalchemy import text

from gridlink.errors import Unauthenticated
from gridlink.services import Services
from gridlink.tokens import Principal, hash_token

_LOOKUP = text(
    """
    SELECT u.id, u.username, u.is_admin
    FROM auth_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = :token_hash AND t.revoked_on IS NULL AND t.expires_on > now()
    """
)


def authenticate(services: Services, token: str) -> Principal:
    """Return the user behind ``token``, or raise 401 if it is unknown, expired or revoked."""
    token_hash = hash_token(token)
    with services.primary.connect() as connection:
        row = connection.execute(_LOOKUP, {"token_hash": token_hash}).one_or_none()
    if row is None:
        raise Unauthenticated("The token is not valid.")
    return Principal(
        user_id=row.id, username=row.username, is_admin=row.is_admin, token_hash=token_hash
    )
