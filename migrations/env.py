"""Alembic environment: migrations run online against the primary."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from gridlink.models import Base
from gridlink.settings import Settings

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """Take the URL `gridlink migrate` passed, else the one GRIDLINK_* names."""
    url: str | None = config.attributes.get("database_url")
    return url or Settings.from_env(os.environ).database_url


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Gridlink's migrations run online only: use `gridlink migrate`.")
run_migrations_online()
