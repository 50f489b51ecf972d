"""Add login devices: the clients an account logged in from, kept as hashes for the throttle.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-29 10:00:00

A client that presents the device value a login of this account answered
keeps its own allowance of failed logins (API.md, "Login throttling"). Only
the SHA-256 of the value is stored, so a copy of this table makes none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_devices",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("device_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_used_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_login_devices_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_devices")),
        sa.UniqueConstraint("device_hash", name=op.f("uq_login_devices_device_hash")),
    )
    op.create_index("ix_login_devices_user_id", "login_devices", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_login_devices_user_id", table_name="login_devices")
    op.drop_table("login_devices")
