"""A small demo profile for `make run`: the user ``demo`` with two grids of links."""

from __future__ import annotations

import functools
import secrets

from gridlink.commands.accounts import sign_up
from gridlink.commands.grids import create_grid
from gridlink.commands.links import create_link
from gridlink.commands.unit_of_work import UnitOfWork, run_command
from gridlink.errors import Conflict
from gridlink.services import Services

DEMO_USERNAME = "demo"

DEMO_GRIDS = {
    "Work": [
        ("Portfolio", "https://example.com/portfolio", "/bg/colours.jpg", 2, 1),
        ("Writing", "https://example.com/blog", "", 1, 1),
        ("Talks", "https://example.com/talks", "", 1, 2),
    ],
    "Play": [
        ("Photos", "https://example.com/photos", "https://example.com/bg/sea.jpg", 2, 2),
        ("Music", "https://example.com/music", "", 1, 1),
    ],
}


def load_demo(services: Services) -> str | None:
    """Create the demo account and its grids; return its password, or None if it exists."""
    password = secrets.token_urlsafe(12)
    try:
        signed_in = run_command(
            services,
            functools.partial(
                sign_up,
                username=DEMO_USERNAME,
                email="demo@example.com",
                password=password,
                address=None,
                display_name="Demo",
            ),
        )
    except Conflict:
        return None
    user_id = signed_in.user.id
    for title, links in DEMO_GRIDS.items():
        with UnitOfWork.from_services(services) as uow:
            grid_slug = create_grid(uow, user_id, title).slug
            for position, (link_title, url, background, width, height) in enumerate(links):
                create_link(
                    uow,
                    user_id,
                    {
                        "grid": grid_slug,
                        "title": link_title,
                        "url": url,
                        "background": background,
                        "width": width,
                        "height": height,
                        "position": position,
                    },
                )
            uow.commit()
    return password
