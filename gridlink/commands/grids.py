"""Write side of grids: create, rename, soft-delete.

Each command runs in the caller's unit of work, holds the owner's profile
lock (see ``profiles.lock_profile``) and ends by rebuilding the owner's
profile document.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gridlink.commands.profiles import lock_profile, refresh_profile
from gridlink.commands.results import Created
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.documents import GRID_BY_SLUG
from gridlink.errors import LimitReached, NotFound, PermissionDenied
from gridlink.models import Grid, Link
from gridlink.slugs import GRID_PREFIX, is_slug, new_slug

_SLUG_ATTEMPTS = 5


def create_grid(uow: UnitOfWork, user_id: int, title: str) -> Created:
    """Create a grid for ``user_id``, within the per-user grid limit."""
    lock_profile(uow, user_id)
    limit = uow.settings.max_grids_per_user
    live_grids = uow.session.scalar(
        select(func.count()).where(Grid.user_id == user_id, Grid.is_deleted.is_(False))
    )
    if live_grids is not None and live_grids >= limit:
        raise LimitReached(f"You can have at most {limit} grids.")
    slug = insert_with_new_slug(uow, Grid, GRID_PREFIX, {"user_id": user_id, "title": title})
    refresh_profile(uow, user_id)
    return Created(slug, document=grid_body(uow, slug))


def rename_grid(uow: UnitOfWork, user_id: int, slug: str, title: str) -> bytes:
    lock_profile(uow, user_id)
    grid_id = owned_grid_id(uow, user_id, slug, "You don't have permission to change this grid.")
    uow.session.execute(
        update(Grid).where(Grid.id == grid_id).values(title=title, modified_on=func.now())
    )
    refresh_profile(uow, user_id)
    return grid_body(uow, slug)


def soft_delete_grid(uow: UnitOfWork, user_id: int, slug: str) -> None:
    """Mark the grid and its live links deleted; the rows are kept."""
    lock_profile(uow, user_id)
    grid_id = owned_grid_id(uow, user_id, slug, "You don't have permission to delete this grid.")
    uow.session.execute(
        update(Link)
        .where(Link.grid_id == grid_id, Link.is_deleted.is_(False))
        .values(is_deleted=True, deleted_on=func.now())
    )
    uow.session.execute(
        update(Grid).where(Grid.id == grid_id).values(is_deleted=True, deleted_on=func.now())
    )
    refresh_profile(uow, user_id)


def owned_grid_id(uow: UnitOfWork, user_id: int, slug: str, denied_message: str) -> int:
    """Return the id of the caller's live grid ``slug``: 404 if there is none, 403 if not theirs."""
    if not is_slug(slug, GRID_PREFIX):
        raise NotFound("No such grid.")
    grid = uow.session.execute(
        select(Grid.id, Grid.user_id).where(Grid.slug == slug, Grid.is_deleted.is_(False))
    ).one_or_none()
    if grid is None:
        raise NotFound("No such grid.")
    if grid.user_id != user_id:
        raise PermissionDenied(denied_message)
    return int(grid.id)


def insert_with_new_slug(
    uow: UnitOfWork, table: type[Grid] | type[Link], prefix: str, values: dict[str, Any]
) -> str:
    """Insert a row with a fresh random slug, retrying the (astronomically rare) collision."""
    for _ in range(_SLUG_ATTEMPTS):
        slug = new_slug(prefix)
        statement = (
            pg_insert(table)
            .values(slug=slug, **values)
            .on_conflict_do_nothing(index_elements=["slug"])
            .returning(table.id)
        )
        if uow.session.execute(statement).one_or_none() is not None:
            return slug
    raise RuntimeError("could not find an unused slug")


def grid_body(uow: UnitOfWork, slug: str) -> bytes:
    """Render the grid as API JSON, inside the transaction that changed it."""
    body: str = uow.session.execute(text(GRID_BY_SLUG), {"slug": slug}).scalar_one()
    return body.encode()
