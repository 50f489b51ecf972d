"""Add the change stream's outbox: the set of profiles changed and not yet relayed to Redis.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 21:45:00

A dirty set, not a log: at most one row per username (the newest version),
so it is bounded by the number of users however long the relay is away.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "profile_changes",
        sa.Column("username_key", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("username_key", name=op.f("pk_profile_changes")),
    )


def downgrade() -> None:
    op.drop_table("profile_changes")
