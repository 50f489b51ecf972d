"""Write side of links: create, change (or move to another grid), soft-delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update

from gridlink.commands.grids import insert_with_new_slug, owned_grid_id
from gridlink.commands.profiles import lock_profile, refresh_profile
from gridlink.commands.results import Created
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.documents import LINK_BY_SLUG
from gridlink.errors import LimitReached, NotFound, PermissionDenied
from gridlink.models import Link
from gridlink.slugs import LINK_PREFIX, is_slug

MAX_POSITION = 10000


def create_link(uow: UnitOfWork, user_id: int, fields: dict[str, Any]) -> Created:
    """Create a link in one of the caller's grids; ``position`` defaults to after the last."""
    lock_profile(uow, user_id)
    values = dict(fields)
    grid_id = owned_grid_id(
        uow, user_id, values.pop("grid"), "You don't have permission to add links to this grid."
    )
    _check_room(uow, grid_id)
    if "position" not in values:
        values["position"] = _next_position(uow, grid_id)
    slug = insert_with_new_slug(
        uow, Link, LINK_PREFIX, {**values, "grid_id": grid_id, "user_id": user_id}
    )
    refresh_profile(uow, user_id)
    return Created(slug, document=link_body(uow, slug))


def change_link(uow: UnitOfWork, user_id: int, slug: str, changes: dict[str, Any]) -> bytes:
    """Apply ``changes`` to the caller's link; a new ``grid`` must be the caller's too."""
    lock_profile(uow, user_id)
    link = _owned_link(uow, user_id, slug, "You don't have permission to change this link.")
    values = dict(changes)
    if "grid" in values:
        grid_id = owned_grid_id(
            uow, user_id, values.pop("grid"), "You don't have permission to move links there."
        )
        if grid_id != link.grid_id:
            _check_room(uow, grid_id)
        values["grid_id"] = grid_id
    uow.session.execute(
        update(Link).where(Link.id == link.id).values(**values, modified_on=func.now())
    )
    refresh_profile(uow, user_id)
    return link_body(uow, slug)


def soft_delete_link(uow: UnitOfWork, user_id: int, slug: str) -> None:
    lock_profile(uow, user_id)
    link = _owned_link(uow, user_id, slug, "You don't have permission to delete this link.")
    uow.session.execute(
        update(Link).where(Link.id == link.id).values(is_deleted=True, deleted_on=func.now())
    )
    refresh_profile(uow, user_id)


def link_body(uow: UnitOfWork, slug: str) -> bytes:
    """Render the link as API JSON, inside the transaction that changed it."""
    body: str = uow.session.execute(text(LINK_BY_SLUG), {"slug": slug}).scalar_one()
    return body.encode()


def _owned_link(uow: UnitOfWork, user_id: int, slug: str, denied_message: str) -> Any:
    if not is_slug(slug, LINK_PREFIX):
        raise NotFound("No such link.")
    link = uow.session.execute(
        select(Link.id, Link.user_id, Link.grid_id).where(
            Link.slug == slug, Link.is_deleted.is_(False)
        )
    ).one_or_none()
    if link is None:
        raise NotFound("No such link.")
    if link.user_id != user_id:
        raise PermissionDenied(denied_message)
    return link


def _check_room(uow: UnitOfWork, grid_id: int) -> None:
    limit = uow.settings.max_links_per_grid
    live_links = uow.session.scalar(
        select(func.count()).where(Link.grid_id == grid_id, Link.is_deleted.is_(False))
    )
    if live_links is not None and live_links >= limit:
        raise LimitReached(f"A grid can hold at most {limit} links.")


def _next_position(uow: UnitOfWork, grid_id: int) -> int:
    last = uow.session.scalar(
        select(func.max(Link.position)).where(Link.grid_id == grid_id, Link.is_deleted.is_(False))
    )
    return 0 if last is None else min(last + 1, MAX_POSITION)
