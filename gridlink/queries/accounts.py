"""Read the caller's own account (the Me object)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, text

from gridlink.errors import Unauthenticated

_ME = text(
    """
    SELECT username, email, display_name, is_admin, created_on
    FROM users WHERE id = :user_id
    """
)


def read_me(connection: Connection, user_id: int) -> Row[Any]:
    """Return the caller's account.

    Run it through ``Reader.read`` with the caller as reader: the commands that
    change the account remember the write, so the caller reads it back at once.
    """
    row = connection.execute(_ME, {"user_id": user_id}).one_or_none()
    if row is None:
        # Deleted after its token was checked: the token went with it.
        raise Unauthenticated("The token is not valid.")
    return row
