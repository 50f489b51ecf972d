"""HTTP resources: parse with a schema, call a command or a query, render."""

from __future__ import annotations

from gridlink.http import App
from gridlink.resources import accounts, grids, health, links, monitoring, profiles
from gridlink.services import Services


def add_routes(app: App, services: Services) -> None:
    """Mount every resource of the API on ``app``."""
    for module in (health, accounts, profiles, grids, links, monitoring):
        module.add_routes(app, services)
