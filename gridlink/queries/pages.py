"""Lists: ``{"data": [...], "has_more": ...}`` pages, assembled from ready JSON rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, TextClause

from gridlink.errors import InvalidRequest

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None


def fetch_page(
    connection: Connection, statement: TextClause, params: dict[str, object], limit: int
) -> bytes:
    """Run ``statement`` for ``limit + 1`` JSON rows and assemble the page body.

    The extra row only tells whether there is more: ``has_more`` is exact.
    """
    rows: Sequence[str] = (
        connection.execute(statement, {**params, "limit": limit + 1}).scalars().all()
    )
    data = ",".join(rows[:limit])
    has_more = "true" if len(rows) > limit else "false"
    return f'{{"data":[{data}],"has_more":{has_more}}}'.encode()


def unknown_cursor() -> InvalidRequest:
    return InvalidRequest(
        "starting_after does not name an item of this list.",
        fields={"starting_after": ["Not an item of this list."]},
    )
