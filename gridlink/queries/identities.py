"""Read the caller's identities at OpenID providers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, text

# Few per account (one per provider, in practice): one page.
_IDENTITIES = text(
    """
    SELECT public_id AS id, provider, subject, email, created_on AS created
    FROM identities WHERE user_id = :user_id ORDER BY created_on, id
    """
)


def read_identities(connection: Connection, *, user_id: int) -> Sequence[Row[Any]]:
    """Return the user's linked identities, oldest first.

    Run it on the primary: a link or an unlink a moment ago must show in the next list.
    """
    return connection.execute(_IDENTITIES, {"user_id": user_id}).all()
