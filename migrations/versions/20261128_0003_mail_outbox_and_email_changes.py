"""Add the mail outbox, pending email changes, and indexes for `gridlink maintenance`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 21:50:00
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_on() -> sa.Column[datetime]:
    return sa.Column(
        "created_on", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.BigInteger(), nullable=False),
        _created_on(),
        sa.Column("to_address", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_outbox")),
    )
    op.create_index("ix_mail_outbox_created_on", "mail_outbox", ["created_on"], unique=False)
    op.create_table(
        "email_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("new_email", sa.String(length=254), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        _created_on(),
        sa.Column("expires_on", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_on", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "char_length(new_email) <= 254", name=op.f("ck_email_changes_new_email_length")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_changes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_changes")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_changes_token_hash")),
    )
    op.create_index("ix_email_changes_user_id", "email_changes", ["user_id"], unique=False)
    # What `gridlink maintenance` deletes by age, found without a full scan.
    op.create_index("ix_auth_tokens_expires_on", "auth_tokens", ["expires_on"], unique=False)
    op.create_index(
        "ix_password_resets_expires_on", "password_resets", ["expires_on"], unique=False
    )
    op.create_index("ix_email_changes_expires_on", "email_changes", ["expires_on"], unique=False)
    for table in ("grids", "links"):
        op.create_index(
            f"ix_{table}_deleted_on",
            table,
            ["deleted_on"],
            unique=False,
            postgresql_where=sa.text("is_deleted"),
        )


def downgrade() -> None:
    for table in ("grids", "links"):
        op.drop_index(f"ix_{table}_deleted_on", table_name=table)
    op.drop_index("ix_email_changes_expires_on", table_name="email_changes")
    op.drop_index("ix_password_resets_expires_on", table_name="password_resets")
    op.drop_index("ix_auth_tokens_expires_on", table_name="auth_tokens")
    op.drop_index("ix_email_changes_user_id", table_name="email_changes")
    op.drop_table("email_changes")
    op.drop_index("ix_mail_outbox_created_on", table_name="mail_outbox")
    op.drop_table("mail_outbox")
