"""Bring a database to the newest schema with Alembic (``gridlink migrate``)."""

from __future__ import annotations

from gridlink.project import ALEMBIC_INI


def migrate(database_url: str) -> None:
    """Apply every Alembic migration to the database at ``database_url``."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
