"""Keep no usable token at rest: token mails are queued as orders, emails fold ASCII only.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-29 10:00:00

- ``mail_outbox`` gets a ``kind``: a ``message`` keeps its written text (it
  carries nothing that grants anything); a ``password_reset`` or an
  ``email_confirmation`` is only the order, and its token is made when the
  mail is sent (``gridlink.mail.letters``). Mails queued before this
  migration are messages and are sent as they are.
- ``email_changes.token_hash`` is null until the confirmation mail is sent.
- ``uq_users_lower_email`` folds ASCII letters only (``lower(email COLLATE
  "C")``), as the per-email limits do in Python, whatever the server's
  locale. Emails equal under it were equal under the old index too (every
  locale folds A-Z), so rebuilding it finds no duplicate.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "mail_outbox", sa.Column("kind", sa.Text(), server_default="message", nullable=False)
    )
    op.add_column("mail_outbox", sa.Column("email_change_id", sa.BigInteger(), nullable=True))
    op.add_column("mail_outbox", sa.Column("client_address", sa.Text(), nullable=True))
    op.add_column("mail_outbox", sa.Column("request_id", sa.Text(), nullable=True))
    op.alter_column("mail_outbox", "subject", existing_type=sa.Text(), nullable=True)
    op.alter_column("mail_outbox", "body", existing_type=sa.Text(), nullable=True)
    op.create_foreign_key(
        op.f("fk_mail_outbox_email_change_id_email_changes"),
        "mail_outbox",
        "email_changes",
        ["email_change_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_check_constraint(
        op.f("ck_mail_outbox_kind_known"),
        "mail_outbox",
        "kind IN ('message', 'password_reset', 'email_confirmation')",
    )
    op.create_check_constraint(
        op.f("ck_mail_outbox_text_only_in_messages"),
        "mail_outbox",
        "(kind = 'message') = (subject IS NOT NULL AND body IS NOT NULL)",
    )
    op.create_check_constraint(
        op.f("ck_mail_outbox_confirmation_has_its_change"),
        "mail_outbox",
        "(kind = 'email_confirmation') = (email_change_id IS NOT NULL)",
    )
    op.alter_column(
        "email_changes", "token_hash", existing_type=sa.LargeBinary(length=32), nullable=True
    )
    op.drop_index("uq_users_lower_email", table_name="users")
    op.create_index(
        "uq_users_lower_email", "users", [sa.text('lower(email COLLATE "C")')], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_users_lower_email", table_name="users")
    op.create_index("uq_users_lower_email", "users", [sa.text("lower(email)")], unique=True)
    # A change whose mail was never sent has no token: nothing can confirm it.
    op.execute("DELETE FROM email_changes WHERE token_hash IS NULL")
    op.alter_column(
        "email_changes", "token_hash", existing_type=sa.LargeBinary(length=32), nullable=False
    )
    # The old outbox holds written mails only: orders not yet sent are dropped.
    op.execute("DELETE FROM mail_outbox WHERE kind <> 'message'")
    op.drop_constraint(
        op.f("ck_mail_outbox_confirmation_has_its_change"), "mail_outbox", type_="check"
    )
    op.drop_constraint(op.f("ck_mail_outbox_text_only_in_messages"), "mail_outbox", type_="check")
    op.drop_constraint(op.f("ck_mail_outbox_kind_known"), "mail_outbox", type_="check")
    op.drop_constraint(
        op.f("fk_mail_outbox_email_change_id_email_changes"), "mail_outbox", type_="foreignkey"
    )
    op.alter_column("mail_outbox", "body", existing_type=sa.Text(), nullable=False)
    op.alter_column("mail_outbox", "subject", existing_type=sa.Text(), nullable=False)
    op.drop_column("mail_outbox", "request_id")
    op.drop_column("mail_outbox", "client_address")
    op.drop_column("mail_outbox", "email_change_id")
    op.drop_column("mail_outbox", "kind")
