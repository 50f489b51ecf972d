"""Read side of grids: one grid, and the caller's grids as a list."""

from __future__ import annotations

from sqlalchemy import Connection, text

from gridlink.documents import GRID_BY_SLUG, GRID_JSON, GRID_ORDER
from gridlink.queries.pages import PageRequest, fetch_page, unknown_cursor
from gridlink.slugs import GRID_PREFIX, is_slug

_BY_SLUG = text(GRID_BY_SLUG)

_CURSOR = text("SELECT id FROM grids WHERE slug = :slug AND user_id = :user_id")

_PAGE = text(
    f"""
    SELECT {GRID_JSON}::text
    FROM grids g JOIN users u ON u.id = g.user_id
    WHERE g.user_id = :user_id AND NOT g.is_deleted AND g.id > :after_id
    ORDER BY {GRID_ORDER}
    LIMIT :limit
    """
)


def read_grid(connection: Connection, slug: str) -> bytes | None:
    """Return the live grid with its links as API JSON (one query), or None."""
    if not is_slug(slug, GRID_PREFIX):
        return None
    body: str | None = connection.execute(_BY_SLUG, {"slug": slug}).scalar_one_or_none()
    return None if body is None else body.encode()


def list_grids(connection: Connection, user_id: int, page: PageRequest) -> bytes:
    """Return a page of the user's live grids in creation order (at most two queries)."""
    after_id = 0
    if page.starting_after is not None:
        found = connection.execute(
            _CURSOR, {"slug": page.starting_after, "user_id": user_id}
        ).scalar_one_or_none()
        if found is None:
            raise unknown_cursor()
        after_id = found
    return fetch_page(connection, _PAGE, {"user_id": user_id, "after_id": after_id}, page.limit)
