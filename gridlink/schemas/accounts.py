"""marshmallow schemas of the accounts endpoints, one direction each.

The ``...In`` schemas load a request body (through ``gridlink.schemas.base``:
unknown fields refused, errors in API.md's shape); ``MeOut`` dumps the Me
object.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields, validate

from gridlink.schemas.base import InputSchema, text_field
from gridlink.slugs import USERNAME_PATTERN


def _new_password() -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=8, max=128))


def _email(**options: Any) -> fields.Email:
    return fields.Email(validate=validate.Length(max=254), **options)


class SignupIn(InputSchema):
    username = fields.String(
        required=True,
        validate=validate.Regexp(
            USERNAME_PATTERN, error="Use 3 to 30 letters (A-Z, a-z), digits or underscores."
        ),
    )
    email = _email(required=True)
    password = _new_password()
    display_name = text_field(64, load_default="")


class LoginIn(InputSchema):
    # A username or an email: either finds the account.
    username = fields.String(required=True, validate=validate.Length(min=1, max=254))
    # Not held to the rules for new passwords: a wrong password is a 401, never a 400.
    password = fields.String(required=True)


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
    email = _email()


class AccountDeleteIn(InputSchema):
    password = fields.String(required=True)


class Timestamp(fields.Field[datetime]):
    """An RFC 3339 UTC time with microseconds and ``Z``, as API.md writes every time."""

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MeOut(Schema):
    username = fields.String()
    email = fields.String()
    display_name = fields.String()
    is_admin = fields.Boolean()
    created_on = Timestamp()
