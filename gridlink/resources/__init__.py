"""HTTP resources: parse with a schema, call a command or a query, render."""

from __future__ import annotations

from gridlink.resources import (
    accounts,
    docs,
    grids,
    health,
    identities,
    links,
    monitoring,
    profiles,
    sessions,
)
from gridlink.services import Services
from gridlink.web.http import App


def add_routes(app: App, services: Services) -> None:
    """Mount every resource of the API on ``app``, and its OpenAPI document."""
    for module in (
        health,
        accounts,
        sessions,
        identities,
        profiles,
        grids,
        links,
        monitoring,
    ):
        module.add_routes(app, services)
    docs.add_routes(app)
