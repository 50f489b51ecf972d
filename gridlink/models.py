"""The SQLAlchemy tables of the primary (typed ``Mapped[...]`` columns).

Only the write side (``gridlink.commands``) works with these classes; the read
side reads the ``profile_documents`` read model and plain ``select()``s.
Internal integer keys stay inside the database: the API shows slugs and
usernames only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Sequence,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gridlink.slugs import IDENTITY_PREFIX, SESSION_PREFIX, new_slug

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# One sequence for every profile document version of every user: versions only
# ever grow, so a deleted account's tombstone outranks anything cached for
# that username, and a new account with the same name outranks the tombstone.
profile_version_seq = Sequence("profile_version_seq", metadata=Base.metadata)

# A session id made by the database, for rows written without one (the tokens
# that predate sessions, and a server of the previous release during a rolling
# deploy); new tokens get 128 random bits from new_slug in Python.
RANDOM_SESSION_ID = text("'se_' || replace(gen_random_uuid()::text, '-', '')")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("username ~ '^[A-Za-z0-9_]{3,30}$'", name="username_form"),
        CheckConstraint("char_length(email) <= 254", name="email_length"),
        CheckConstraint("char_length(display_name) <= 64", name="display_name_length"),
        Index("uq_users_lower_username", func.lower(text("username")), unique=True),
        # Emails fold ASCII letters only, whatever the server's locale (gridlink.accounts.emails).
        Index("uq_users_lower_email", func.lower(text('email COLLATE "C"')), unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(30))
    email: Mapped[str] = mapped_column(String(254))
    # None: an account made through an OpenID provider, until a reset sets a password.
    password_hash: Mapped[str | None] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(String(64), server_default="")
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    modified_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuthToken(Base):
    """A login token, listed to its owner as a session; only the SHA-256 of the token is stored."""

    __tablename__ = "auth_tokens"
    __table_args__ = (
        CheckConstraint("public_id ~ '^se_[0-9a-f]{32}$'", name="public_id_form"),
        CheckConstraint("char_length(client_address) <= 64", name="client_address_length"),
        CheckConstraint("char_length(user_agent) <= 256", name="user_agent_length"),
        Index("ix_auth_tokens_user_id", "user_id"),
        Index("ix_auth_tokens_expires_on", "expires_on"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # The session's id in the API: random, not derived from the token.
    public_id: Mapped[str] = mapped_column(
        String(35),
        unique=True,
        default=lambda: new_slug(SESSION_PREFIX),
        server_default=RANDOM_SESSION_ID,
    )
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Recorded at most once an hour (gridlink.cache.tokens): idle expiry is exact to the hour.
    last_used_on: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_on: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The client that logged in, as the throttles count it, and its User-Agent (cut short).
    client_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))


class LoginDevice(Base):
    """A client an account logged in from, for the login throttle; only its SHA-256 is stored.

    A client that presents the device value its login answered keeps its own
    allowance of failures, whatever others try against the account.
    """

    __tablename__ = "login_devices"
    __table_args__ = (Index("ix_login_devices_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    device_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_on: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Identity(Base):
    """An account's identity at an OpenID provider: (issuer, subject), linked by its owner."""

    __tablename__ = "identities"
    __table_args__ = (
        CheckConstraint("public_id ~ '^id_[0-9a-f]{32}$'", name="public_id_form"),
        CheckConstraint("char_length(subject) <= 255", name="subject_length"),
        CheckConstraint("char_length(email) <= 254", name="email_length"),
        # One account per identity: a second link of it is a 409.
        Index("uq_identities_issuer_subject", "issuer", "subject", unique=True),
        Index("ix_identities_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    public_id: Mapped[str] = mapped_column(
        String(35), unique=True, default=lambda: new_slug(IDENTITY_PREFIX)
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The provider's name in the settings when it was linked; the issuer is who vouches.
    provider: Mapped[str] = mapped_column(String(32))
    issuer: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    # The email the provider gave when it was linked (shown to the owner only).
    email: Mapped[str | None] = mapped_column(String(254))
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SignupTicket(Base):
    """A verified identity no account has yet, waiting for a username; only its hash is kept."""

    __tablename__ = "signup_tickets"
    __table_args__ = (Index("ix_signup_tickets_expires_on", "expires_on"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ticket_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    issuer: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(String(254))
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_on: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PasswordReset(Base):
    """A single-use password reset token; only its SHA-256 is stored."""

    __tablename__ = "password_resets"
    __table_args__ = (
        Index("ix_password_resets_user_id", "user_id"),
        Index("ix_password_resets_expires_on", "expires_on"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_on: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EmailChange(Base):
    """A new email waiting for its owner to confirm a mailed token; only its SHA-256 is stored.

    The token is made when its mail is sent (``gridlink.mail.letters``): until
    then ``token_hash`` is null and nothing can confirm the change.
    """

    __tablename__ = "email_changes"
    __table_args__ = (
        CheckConstraint("char_length(new_email) <= 254", name="new_email_length"),
        Index("ix_email_changes_user_id", "user_id"),
        Index("ix_email_changes_expires_on", "expires_on"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    new_email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_on: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutgoingMail(Base):
    """A mail to send, written in the transaction that decided to send it (the outbox).

    A ``message`` is written out already: it carries nothing that grants
    anything. A mail that carries a token is only the order to send one
    (``password_reset``: to the account with the email ``to_address``, if any;
    ``email_confirmation``: for the pending change ``email_change_id``); the
    token is made when the mail is sent, so it never rests here in plaintext.
    ``client_address`` and ``request_id`` name who asked, for the security
    event logged once it is known which account was asked for.
    """

    __tablename__ = "mail_outbox"
    __table_args__ = (
        Index("ix_mail_outbox_created_on", "created_on"),
        CheckConstraint(
            "kind IN ('message', 'password_reset', 'email_confirmation')", name="kind_known"
        ),
        # Only a message has its text written out: a token mail's text is made when sent.
        CheckConstraint(
            "(kind = 'message') = (subject IS NOT NULL AND body IS NOT NULL)",
            name="text_only_in_messages",
        ),
        CheckConstraint(
            "(kind = 'email_confirmation') = (email_change_id IS NOT NULL)",
            name="confirmation_has_its_change",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    kind: Mapped[str] = mapped_column(Text, server_default="message")
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    email_change_id: Mapped[int | None] = mapped_column(
        ForeignKey("email_changes.id", ondelete="CASCADE")
    )
    client_address: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)


class Grid(Base):
    __tablename__ = "grids"
    __table_args__ = (
        CheckConstraint("slug ~ '^gr_[0-9a-f]{32}$'", name="slug_form"),
        CheckConstraint("char_length(title) <= 128", name="title_length"),
        CheckConstraint("is_deleted = (deleted_on IS NOT NULL)", name="deleted_on_set"),
        # The owner's grids in creation order: lists, counts, profiles, cascades.
        Index("ix_grids_user_id", "user_id", "id"),
        # What `gridlink maintenance` purges past the retention period.
        Index("ix_grids_deleted_on", "deleted_on", postgresql_where=text("is_deleted")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    slug: Mapped[str] = mapped_column(String(35), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(128), server_default="")
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    modified_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    deleted_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Link(Base):
    __tablename__ = "links"
    __table_args__ = (
        CheckConstraint("slug ~ '^li_[0-9a-f]{32}$'", name="slug_form"),
        CheckConstraint("char_length(title) <= 128", name="title_length"),
        CheckConstraint("char_length(url) <= 2048 AND url ~* '^https?://'", name="url_form"),
        CheckConstraint(
            "char_length(background) <= 512 AND background ~* '^($|/|https?://)'",
            name="background_form",
        ),
        CheckConstraint("width BETWEEN 1 AND 4", name="width_range"),
        CheckConstraint("height BETWEEN 1 AND 4", name="height_range"),
        CheckConstraint("position BETWEEN 0 AND 10000", name="position_range"),
        CheckConstraint("is_deleted = (deleted_on IS NOT NULL)", name="deleted_on_set"),
        # A grid's links in list order (position, then creation order); also
        # what the cascade from a deleted account walks.
        Index("ix_links_grid_id", "grid_id", "position", "id"),
        # The owner's links across grids, for GET /api/links/.
        Index("ix_links_user_id", "user_id", "position", "id"),
        Index("ix_links_deleted_on", "deleted_on", postgresql_where=text("is_deleted")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    slug: Mapped[str] = mapped_column(String(35), unique=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"))
    # Denormalised from the grid: the owner's link list and ownership checks
    # need no join.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(128), server_default="")
    url: Mapped[str] = mapped_column(String(2048))
    background: Mapped[str] = mapped_column(String(512), server_default="")
    width: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    height: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    position: Mapped[int] = mapped_column(SmallInteger)
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    modified_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    deleted_on: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProfileDocument(Base):
    """The read model: one user's public Profile as ready-to-send JSON bytes."""

    __tablename__ = "profile_documents"
    __table_args__ = (
        Index("uq_profile_documents_lower_username", func.lower(text("username")), unique=True),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(30))
    version: Mapped[int] = mapped_column(BigInteger)
    document: Mapped[bytes] = mapped_column(LargeBinary)


class ProfileChange(Base):
    """The change stream's outbox: a profile changed since the relay last stored it in Redis.

    A dirty set (one row per username, the newest version), written in the
    transaction of the change and deleted by the relay once Redis has it.
    """

    __tablename__ = "profile_changes"

    username_key: Mapped[str] = mapped_column(Text, primary_key=True)  # lower(username)
    version: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IdempotencyKey(Base):
    """The first answer to a creating POST, replayed for the same key within 24 hours."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_on", "created_on"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_on: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status: Mapped[int] = mapped_column(SmallInteger)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    response_location: Mapped[str | None] = mapped_column(Text)
