"""The API's JSON objects, rendered by PostgreSQL.

Links, grids and profiles are turned into JSON inside the database with
``row_to_json`` (compact, keys in the order written here), so the write side's
profile document and the read side's single-object answers are the same bytes
for the same rows, and Python never re-serialises them.

Every fragment is a constant; values are always bound parameters. The
fragments expect the aliases ``l`` (links), ``g`` (grids) and ``u`` (users).
"""

from __future__ import annotations


def rfc3339(column: str) -> str:
    """Render a ``timestamptz`` column as RFC 3339 UTC with ``Z`` (NULL stays null)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def json_array(element_json: str, order_by: str) -> str:
    """Aggregate JSON elements into a compact array (``[]`` when there are none)."""
    return (
        f"coalesce('[' || string_agg(({element_json})::text, ',' ORDER BY {order_by}) || ']', '[]')"
    )


LINK_JSON = f"""(SELECT row_to_json(o) FROM (SELECT
    l.slug, g.slug AS grid, l.title, l.url, l.background,
    l.width, l.height, l.position,
    {rfc3339("l.created_on")} AS created_on, {rfc3339("l.modified_on")} AS modified_on) o)"""

LINK_ORDER = "l.position, l.id"

GRID_LINKS_JSON = f"""(SELECT {json_array(LINK_JSON, LINK_ORDER)}::json
    FROM links l WHERE l.grid_id = g.id AND NOT l.is_deleted)"""

GRID_JSON = f"""(SELECT row_to_json(o) FROM (SELECT
    g.slug, u.username AS "user", g.title,
    {rfc3339("g.created_on")} AS created_on, {rfc3339("g.modified_on")} AS modified_on,
    {GRID_LINKS_JSON} AS links) o)"""

GRID_ORDER = "g.id"

PROFILE_JSON = f"""(SELECT row_to_json(o) FROM (SELECT
    u.username, u.display_name, {rfc3339("u.created_on")} AS created_on,
    (SELECT {json_array(GRID_JSON, GRID_ORDER)}::json
     FROM grids g WHERE g.user_id = u.id AND NOT g.is_deleted) AS grids) o)"""

GRID_BY_SLUG = f"""SELECT {GRID_JSON}::text AS body
    FROM grids g JOIN users u ON u.id = g.user_id
    WHERE g.slug = :slug AND NOT g.is_deleted"""

LINK_BY_SLUG = f"""SELECT {LINK_JSON}::text AS body
    FROM links l JOIN grids g ON g.id = l.grid_id
    WHERE l.slug = :slug AND NOT l.is_deleted"""
