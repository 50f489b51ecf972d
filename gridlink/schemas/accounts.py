"""marshmallow schemas of the accounts endpoints, one direction each.

The ``...In`` schemas load a request body (through ``gridlink.schemas.base``:
unknown fields refused, errors in API.md's shape); a deletion's body is
one of two (``load_account_deletion``); ``MeOut`` dumps the Me
object and, with ``SignedInOut``, documents it; ``SessionList`` dumps the
sessions list.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from gridlink.accounts.password_rules import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from gridlink.errors import InvalidRequest
from gridlink.schemas.base import (
    InputSchema,
    Timestamp,
    load,
    slug_out,
    text_field,
    username_out,
)
from gridlink.schemas.identities import IdentityLinkIn
from gridlink.slugs import SESSION_PREFIX, USERNAME_JSON_PATTERN, USERNAME_PATTERN


def _new_password() -> fields.String:
    # The length here; whether it is common, in the command, once the request is admitted.
    return fields.String(
        required=True,
        validate=validate.Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH),
        metadata={"description": "Not a common or breached password."},
    )


def _email(**options: Any) -> fields.Email:
    return fields.Email(validate=validate.Length(max=254), **options)


class SignupIn(InputSchema):
    username = fields.String(
        required=True,
        validate=validate.Regexp(
            USERNAME_PATTERN, error="Use 3 to 30 letters (A-Z, a-z), digits or underscores."
        ),
        metadata={"pattern": USERNAME_JSON_PATTERN},
    )
    email = _email(required=True)
    password = _new_password()
    display_name = text_field(64, load_default="")


class LoginIn(InputSchema):
    # A username or an email: either finds the account.
    username = fields.String(required=True, validate=validate.Length(min=1, max=254))
    # Not held to the rules for new passwords: a wrong password is a 401, never a 400.
    password = fields.String(required=True)
    # The value a login or sign-up of this account answered: the client's own allowance.
    device = fields.String(validate=validate.Length(min=1, max=256))


class PasswordChangeIn(InputSchema):
    current_password = fields.String(required=True)
    new_password = _new_password()


class PasswordResetIn(InputSchema):
    email = _email(required=True)


class PasswordResetConfirmIn(InputSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=256))
    new_password = _new_password()


class MeUpdateIn(InputSchema):
    display_name = text_field(64)
    # A new email needs the current password, and takes effect once confirmed.
    email = _email()
    current_password = fields.String()


class EmailConfirmIn(InputSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=256))


class AccountDeleteIn(InputSchema):
    """Deletion confirmed by the account's password."""

    password = fields.String(required=True)


class ProviderConfirmationIn(IdentityLinkIn):
    """Deletion confirmed by a fresh sign-in at a provider whose identity is linked to the account.

    For an account without a password, or any account with a linked identity.
    """


ACCOUNT_DELETIONS = (AccountDeleteIn, ProviderConfirmationIn)
_BY_PROVIDER = tuple(ProviderConfirmationIn().fields)


def load_account_deletion(body: dict[str, Any]) -> dict[str, Any]:
    """Load a deletion's body: ``password``, or the provider's fields; 400 for both or neither."""
    by_password = "password" in body
    by_provider = sorted(name for name in _BY_PROVIDER if name in body)
    if by_password == bool(by_provider):
        named = ["password", *by_provider] if by_password else ["password", "provider"]
        problem = (
            "Send `password`, or `provider` with `code`, `code_verifier`, `redirect_uri` "
            "and `nonce` (a fresh sign-in at a linked provider): "
            + ("not both." if by_password else "one of them.")
        )
        raise InvalidRequest(
            "Confirm the deletion with the password or with a provider, not both and not neither.",
            fields={name: [problem] for name in named},
        )
    return load(AccountDeleteIn() if by_password else ProviderConfirmationIn(), body)


class MeOut(Schema):
    """The Me object of API.md, only ever shown to its owner."""

    username = username_out()
    email = fields.String(required=True)
    display_name = text_field(64, required=True)
    is_admin = fields.Boolean(required=True)
    created_on = Timestamp(required=True)


class SignedInOut(Schema):
    """What sign-up and login answer: the account, a new token and the client's device."""

    user = fields.Nested(MeOut, required=True)
    token = fields.String(required=True)
    # To present at the next login of this account (API.md, "Login throttling").
    device = fields.String(required=True)


class SessionOut(Schema):
    """One of the caller's live tokens, as the sessions list shows it (never the token)."""

    id = slug_out(SESSION_PREFIX)
    created = Timestamp(required=True)
    # Recorded at most once an hour.
    last_used = Timestamp(required=True)
    # The client that logged in, as the login throttle counted it; unknown: null.
    client_address = fields.String(required=True, allow_none=True)
    user_agent = fields.String(required=True, allow_none=True)
    current = fields.Boolean(required=True)


class SessionList(Schema):
    """The caller's sessions: every one fits a page."""

    data = fields.List(fields.Nested(SessionOut), required=True)
    has_more = fields.Boolean(required=True)
