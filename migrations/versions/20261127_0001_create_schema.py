"""Create users, tokens, grids, links, idempotency keys and the profile read model.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 11:25:28.375863
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every profile version of every user comes from one sequence (see models.py).
    op.execute(sa.schema.CreateSequence(sa.Sequence("profile_version_seq")))
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(length=30), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("display_name", sa.String(length=64), server_default="", nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("modified_on", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "username ~ '^[A-Za-z0-9_]{3,30}$'", name=op.f("ck_users_username_form")
        ),
        sa.CheckConstraint(
            "char_length(display_name) <= 64", name=op.f("ck_users_display_name_length")
        ),
        sa.CheckConstraint("char_length(email) <= 254", name=op.f("ck_users_email_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index(
        "uq_users_lower_email", "users", [sa.literal_column("lower(email)")], unique=True
    )
    op.create_index(
        "uq_users_lower_username", "users", [sa.literal_column("lower(username)")], unique=True
    )
    op.create_table(
        "auth_tokens",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_on", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_on", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_auth_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_tokens_token_hash")),
    )
    op.create_index("ix_auth_tokens_user_id", "auth_tokens", ["user_id"], unique=False)
    op.create_table(
        "grids",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("slug", sa.String(length=35), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(length=128), server_default="", nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("modified_on", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted_on", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("slug ~ '^gr_[0-9a-f]{32}$'", name=op.f("ck_grids_slug_form")),
        sa.CheckConstraint("char_length(title) <= 128", name=op.f("ck_grids_title_length")),
        sa.CheckConstraint(
            "is_deleted = (deleted_on IS NOT NULL)", name=op.f("ck_grids_deleted_on_set")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_grids_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grids")),
        sa.UniqueConstraint("slug", name=op.f("uq_grids_slug")),
    )
    op.create_index("ix_grids_user_id", "grids", ["user_id", "id"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("response_body", sa.LargeBinary(), nullable=False),
        sa.Column("response_location", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_created_on", "idempotency_keys", ["created_on"], unique=False
    )
    op.create_table(
        "password_resets",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_on", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_on", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_resets_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_resets")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_resets_token_hash")),
    )
    op.create_index("ix_password_resets_user_id", "password_resets", ["user_id"], unique=False)
    op.create_table(
        "profile_documents",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(length=30), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_profile_documents_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_profile_documents")),
    )
    op.create_index(
        "uq_profile_documents_lower_username",
        "profile_documents",
        [sa.literal_column("lower(username)")],
        unique=True,
    )
    op.create_table(
        "links",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("slug", sa.String(length=35), nullable=False),
        sa.Column("grid_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(length=128), server_default="", nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("background", sa.String(length=512), server_default="", nullable=False),
        sa.Column("width", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("height", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column(
            "created_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("modified_on", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted_on", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "char_length(background) <= 512 AND background ~* '^($|/|https?://)'",
            name=op.f("ck_links_background_form"),
        ),
        sa.CheckConstraint(
            "char_length(url) <= 2048 AND url ~* '^https?://'", name=op.f("ck_links_url_form")
        ),
        sa.CheckConstraint("slug ~ '^li_[0-9a-f]{32}$'", name=op.f("ck_links_slug_form")),
        sa.CheckConstraint("char_length(title) <= 128", name=op.f("ck_links_title_length")),
        sa.CheckConstraint("height BETWEEN 1 AND 4", name=op.f("ck_links_height_range")),
        sa.CheckConstraint(
            "is_deleted = (deleted_on IS NOT NULL)", name=op.f("ck_links_deleted_on_set")
        ),
        sa.CheckConstraint("position BETWEEN 0 AND 10000", name=op.f("ck_links_position_range")),
        sa.CheckConstraint("width BETWEEN 1 AND 4", name=op.f("ck_links_width_range")),
        sa.ForeignKeyConstraint(
            ["grid_id"], ["grids.id"], name=op.f("fk_links_grid_id_grids"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_links_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("slug", name=op.f("uq_links_slug")),
    )
    op.create_index("ix_links_grid_id", "links", ["grid_id", "position", "id"], unique=False)
    op.create_index("ix_links_user_id", "links", ["user_id", "position", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_links_user_id", table_name="links")
    op.drop_index("ix_links_grid_id", table_name="links")
    op.drop_table("links")
    op.drop_index("uq_profile_documents_lower_username", table_name="profile_documents")
    op.drop_table("profile_documents")
    op.drop_index("ix_password_resets_user_id", table_name="password_resets")
    op.drop_table("password_resets")
    op.drop_index("ix_idempotency_keys_created_on", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_grids_user_id", table_name="grids")
    op.drop_table("grids")
    op.drop_index("ix_auth_tokens_user_id", table_name="auth_tokens")
    op.drop_table("auth_tokens")
    op.drop_index("uq_users_lower_username", table_name="users")
    op.drop_index("uq_users_lower_email", table_name="users")
    op.drop_table("users")
    op.execute(sa.schema.DropSequence(sa.Sequence("profile_version_seq")))
