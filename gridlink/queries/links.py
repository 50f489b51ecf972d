"""Read side of links: one link, a grid's links, and the caller's links."""

from __future__ import annotations

from sqlalchemy import Connection, text

from gridlink.documents import LINK_BY_SLUG, LINK_JSON, LINK_ORDER
from gridlink.errors import NotFound
from gridlink.queries.pages import PageRequest, fetch_page, unknown_cursor
from gridlink.slugs import GRID_PREFIX, LINK_PREFIX, is_slug

_BY_SLUG = text(LINK_BY_SLUG)

# The grid, and where the cursor link stands in it, in one round trip.
_GRID_AND_CURSOR = text(
    """
    SELECT g.id AS grid_id, c.position AS after_position, c.id AS after_id
    FROM grids g LEFT JOIN links c ON c.slug = :after AND c.grid_id = g.id
    WHERE g.slug = :grid AND NOT g.is_deleted
    """
)

_USER_CURSOR = text(
    "SELECT position AS after_position, id AS after_id FROM links "
    "WHERE slug = :after AND user_id = :user_id"
)


def _page(scope: str) -> str:
    return f"""
    SELECT {LINK_JSON}::text
    FROM links l JOIN grids g ON g.id = l.grid_id
    WHERE {scope} AND NOT l.is_deleted
      AND (l.position, l.id) > (:after_position, :after_id)
    ORDER BY {LINK_ORDER}
    LIMIT :limit
    """


_GRID_PAGE = text(_page("l.grid_id = :grid_id"))
_USER_PAGE = text(_page("l.user_id = :user_id"))

_START = {"after_position": -1, "after_id": 0}


def read_link(connection: Connection, slug: str) -> bytes | None:
    """Return the live link as API JSON (one query, joined to its grid), or None."""
    if not is_slug(slug, LINK_PREFIX):
        return None
    body: str | None = connection.execute(_BY_SLUG, {"slug": slug}).scalar_one_or_none()
    return None if body is None else body.encode()


def list_grid_links(connection: Connection, grid_slug: str, page: PageRequest) -> bytes:
    """Return a page of a live grid's links by position, then creation (two queries)."""
    if not is_slug(grid_slug, GRID_PREFIX):
        raise NotFound("No such grid.")
    found = connection.execute(
        _GRID_AND_CURSOR, {"grid": grid_slug, "after": page.starting_after}
    ).one_or_none()
    if found is None:
        raise NotFound("No such grid.")
    cursor = _START
    if page.starting_after is not None:
        if found.after_id is None:
            raise unknown_cursor()
        cursor = {"after_position": found.after_position, "after_id": found.after_id}
    return fetch_page(connection, _GRID_PAGE, {"grid_id": found.grid_id, **cursor}, page.limit)


def list_user_links(connection: Connection, user_id: int, page: PageRequest) -> bytes:
    """Return a page of the user's live links across grids (at most two queries)."""
    cursor = _START
    if page.starting_after is not None:
        found = connection.execute(
            _USER_CURSOR, {"after": page.starting_after, "user_id": user_id}
        ).one_or_none()
        if found is None:
            raise unknown_cursor()
        cursor = {"after_position": found.after_position, "after_id": found.after_id}
    return fetch_page(connection, _USER_PAGE, {"user_id": user_id, **cursor}, page.limit)
