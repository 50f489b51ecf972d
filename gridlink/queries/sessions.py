"""Read the caller's sessions: their live tokens, described, never the tokens themselves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, text

_SESSIONS = text(
    """
    SELECT public_id AS id, created_on AS created, last_used_on AS last_used,
           client_address, user_agent, token_hash = :current_hash AS current
    FROM auth_tokens
    WHERE user_id = :user_id AND revoked_on IS NULL AND expires_on > now()
      AND last_used_on > now() - make_interval(days => :idle_days)
    ORDER BY created_on, id
    """
)


def read_sessions(
    connection: Connection, *, user_id: int, current_hash: bytes, idle_days: int
) -> Sequence[Row[Any]]:
    """Return the user's live sessions in the order they began, the one of ``current_hash`` marked.

    Run it on the primary: a session just begun or ended must show as such in
    the very next list, and logins leave no read-your-writes mark. At most
    ``GRIDLINK_MAX_TOKENS_PER_USER`` rows: one page.
    """
    return connection.execute(
        _SESSIONS, {"user_id": user_id, "current_hash": current_hash, "idle_days": idle_days}
    ).all()
