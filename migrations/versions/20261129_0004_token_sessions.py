"""Make each login token a session its owner can list and end: a public id, last use, the client.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00

The tokens issued before this migration get a random session id from the
database, no client address or user agent (never recorded), and a last use
of now: when they were last used is not known, and counting them idle since
their creation would log out at once everyone who logged in over two weeks
ago. They still end at their ``expires_on``, at most 30 days after issue.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As gridlink.models.RANDOM_SESSION_ID: volatile, so each existing row gets its own.
_RANDOM_SESSION_ID = sa.text("'se_' || replace(gen_random_uuid()::text, '-', '')")


def upgrade() -> None:
    op.add_column(
        "auth_tokens",
        sa.Column(
            "public_id", sa.String(length=35), server_default=_RANDOM_SESSION_ID, nullable=False
        ),
    )
    op.add_column(
        "auth_tokens",
        sa.Column(
            "last_used_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.add_column("auth_tokens", sa.Column("client_address", sa.String(length=64), nullable=True))
    op.add_column("auth_tokens", sa.Column("user_agent", sa.String(length=256), nullable=True))
    op.create_unique_constraint(op.f("uq_auth_tokens_public_id"), "auth_tokens", ["public_id"])
    op.create_check_constraint(
        op.f("ck_auth_tokens_public_id_form"), "auth_tokens", "public_id ~ '^se_[0-9a-f]{32}$'"
    )
    op.create_check_constraint(
        op.f("ck_auth_tokens_client_address_length"),
        "auth_tokens",
        "char_length(client_address) <= 64",
    )
    op.create_check_constraint(
        op.f("ck_auth_tokens_user_agent_length"), "auth_tokens", "char_length(user_agent) <= 256"
    )


def downgrade() -> None:
    for name in (
        "ck_auth_tokens_user_agent_length",
        "ck_auth_tokens_client_address_length",
        "ck_auth_tokens_public_id_form",
    ):
        op.drop_constraint(op.f(name), "auth_tokens", type_="check")
    op.drop_constraint(op.f("uq_auth_tokens_public_id"), "auth_tokens", type_="unique")
    for column in ("user_agent", "client_address", "last_used_on", "public_id"):
        op.drop_column("auth_tokens", column)
