"""Add OpenID identities and sign-up tickets; an account may have no password.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 12:00:00

An identity (issuer, subject) is linked to at most one account, and goes
with it (ON DELETE CASCADE). A sign-up ticket holds a verified identity no
account has yet for ten minutes; only the SHA-256 of the ticket is stored.
An account made through a provider has no password hash until a reset sets
one: a password login to it fails as a wrong password does.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("users", "password_hash", existing_type=sa.Text(), nullable=True)
    op.create_table(
        "identities",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("public_id", sa.String(length=35), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "public_id ~ '^id_[0-9a-f]{32}$'", name=op.f("ck_identities_public_id_form")
        ),
        sa.CheckConstraint(
            "char_length(subject) <= 255", name=op.f("ck_identities_subject_length")
        ),
        sa.CheckConstraint("char_length(email) <= 254", name=op.f("ck_identities_email_length")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_identities_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        sa.UniqueConstraint("public_id", name=op.f("uq_identities_public_id")),
    )
    op.create_index(
        "uq_identities_issuer_subject", "identities", ["issuer", "subject"], unique=True
    )
    op.create_index("ix_identities_user_id", "identities", ["user_id"], unique=False)
    op.create_table(
        "signup_tickets",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("ticket_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_on", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_tickets")),
        sa.UniqueConstraint("ticket_hash", name=op.f("uq_signup_tickets_ticket_hash")),
    )
    op.create_index("ix_signup_tickets_expires_on", "signup_tickets", ["expires_on"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_signup_tickets_expires_on", table_name="signup_tickets")
    op.drop_table("signup_tickets")
    op.drop_index("ix_identities_user_id", table_name="identities")
    op.drop_index("uq_identities_issuer_subject", table_name="identities")
    op.drop_table("identities")
    # Accounts without a password cannot be kept by the older schema.
    op.execute("DELETE FROM users WHERE password_hash IS NULL")
    op.alter_column("users", "password_hash", existing_type=sa.Text(), nullable=False)
