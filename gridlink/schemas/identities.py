"""marshmallow schemas of sign-in with OpenID providers and the caller's identities."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from gridlink.schemas.base import InputSchema, Timestamp, slug_out
from gridlink.slugs import IDENTITY_PREFIX, USERNAME_JSON_PATTERN, USERNAME_PATTERN

# RFC 7636 §4.1: 43 to 128 of the unreserved characters.
CODE_VERIFIER_PATTERN = r"\A[A-Za-z0-9._~-]{43,128}\Z"


class ProviderOut(Schema):
    """What a client needs to start the browser part with one provider."""

    name = fields.String(required=True, metadata={"description": "The provider's path segment."})
    issuer = fields.String(required=True)
    authorization_endpoint = fields.String(required=True)
    client_id = fields.String(required=True)
    scopes = fields.List(fields.String(), required=True)


class ProviderList(Schema):
    """Every provider one may sign in with (one whose discovery never answered is left out)."""

    data = fields.List(fields.Nested(ProviderOut), required=True)


class RedemptionIn(InputSchema):
    """What the client holds after the provider sent the browser back: a code to redeem."""

    code = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    code_verifier = fields.String(
        required=True,
        validate=validate.Regexp(CODE_VERIFIER_PATTERN, error="Not a PKCE code verifier."),
        metadata={"pattern": "^[A-Za-z0-9._~-]{43,128}$"},
    )
    redirect_uri = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    nonce = fields.String(required=True, validate=validate.Length(min=1, max=512))


class IdentityLinkIn(RedemptionIn):
    provider = fields.String(required=True, validate=validate.Length(min=1, max=32))


class SignupOfferOut(Schema):
    """A verified identity no account has: sign up with the ticket within 10 minutes."""

    signup_ticket = fields.String(required=True)
    suggested_username = fields.String(required=True, metadata={"pattern": USERNAME_JSON_PATTERN})


class TicketSignupIn(InputSchema):
    signup_ticket = fields.String(required=True, validate=validate.Length(min=1, max=256))
    username = fields.String(
        required=True,
        validate=validate.Regexp(
            USERNAME_PATTERN, error="Use 3 to 30 letters (A-Z, a-z), digits or underscores."
        ),
        metadata={"pattern": USERNAME_JSON_PATTERN},
    )


class IdentityOut(Schema):
    """One identity linked to the caller's account."""

    id = slug_out(IDENTITY_PREFIX)
    provider = fields.String(required=True)
    subject = fields.String(required=True)
    email = fields.String(required=True, allow_none=True)
    created = Timestamp(required=True)


class IdentityList(Schema):
    data = fields.List(fields.Nested(IdentityOut), required=True)
    has_more = fields.Boolean(required=True)
