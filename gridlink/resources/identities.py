"""Sign-in with OpenID providers (``/api/auth/oidc/``) and the caller's identities."""

from __future__ import annotations

from functools import partial
from typing import Any

import falcon
import orjson

from gridlink.accounts.tokens import Principal
from gridlink.commands import identities
from gridlink.commands.sessions import SignedIn
from gridlink.commands.unit_of_work import run_command
from gridlink.errors import NotFound
from gridlink.models import Identity
from gridlink.oidc.provider import ProviderClient
from gridlink.queries.identities import read_identities
from gridlink.queries.reader import Reader
from gridlink.resources.accounts import send_signed_in
from gridlink.resources.params import idempotency_key
from gridlink.resources.responses import READ_SOURCE_HEADER, send_answer
from gridlink.schemas.accounts import SignedInOut
from gridlink.schemas.base import NoBodyIn, load
from gridlink.schemas.identities import (
    IdentityLinkIn,
    IdentityList,
    IdentityOut,
    ProviderList,
    RedemptionIn,
    SignupOfferOut,
    TicketSignupIn,
)
from gridlink.services import Services
from gridlink.slugs import IDENTITY_PREFIX, slug_json_pattern
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import (
    App,
    client_address,
    read_json_object,
    read_optional_json_object,
    send_object,
)
from gridlink.web.idempotency import Answer, run_creating_command
from gridlink.web.openapi import Operation, Reply, documented

_TAG = "accounts"
_PROVIDER_NAME = ({"type": "string", "pattern": "^[a-z][a-z0-9]{0,31}$"}, "The provider's name.")
IDENTITY_ID = (
    {"type": "string", "pattern": slug_json_pattern(IDENTITY_PREFIX)},
    "The identity's id.",
)
_UNKNOWN_PROVIDER = "No provider of this name is configured."
_REFUSED = (
    "The code was refused by the provider, or the ID token failed a check (signature, "
    "issuer, audience, expiry, nonce); or a new identity has no verified email."
)
_UNAVAILABLE = "The provider cannot be reached (its endpoints alone); try again after Retry-After."


class _IdentityResource:
    def __init__(self, services: Services) -> None:
        self._services = services

    def _provider(self, name: str) -> ProviderClient:
        provider = self._services.identity_providers.get(name)
        if provider is None:
            raise NotFound(_UNKNOWN_PROVIDER)
        return provider

    def _client(self, req: falcon.Request) -> str:
        return client_address(req, self._services.settings.trusted_proxies)


class Providers(_IdentityResource):
    @documented(
        Operation(
            "listIdentityProviders",
            "The OpenID Connect providers one may sign in with, and what the client needs to "
            "start Authorization Code with PKCE at each.",
            (Reply(200, "Every provider whose discovery document is known.", ProviderList),),
            tag=_TAG,
            uses_database=False,
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        listed = []
        for provider in self._services.identity_providers.values():
            metadata = provider.known_metadata()
            if metadata is None:
                continue  # never reached yet: a client could not start there anyway
            listed.append(
                {
                    "name": provider.name,
                    "issuer": metadata.issuer,
                    "authorization_endpoint": metadata.authorization_endpoint,
                    "client_id": provider.config.client_id,
                    "scopes": list(provider.config.scopes),
                }
            )
        send_object(resp, ProviderList().dump({"data": listed}))


class SignIn(_IdentityResource):
    @documented(
        Operation(
            "signInWithProvider",
            "Redeem a provider's code: the identity's account signs in (200, as a login), or a "
            "new identity gets a sign-up ticket (202). Never linked to an account by email.",
            (
                Reply(200, "The linked account, a new token and a device.", SignedInOut),
                Reply(
                    202, "No account has this identity: sign up with the ticket.", SignupOfferOut
                ),
            ),
            tag=_TAG,
            body=RedemptionIn,
            path={"name": _PROVIDER_NAME},
            errors={
                400: _REFUSED,
                404: _UNKNOWN_PROVIDER,
                409: "No account has this identity, but one has its email: sign in there and "
                "link it.",
                429: "Too many failed sign-ins from this address.",
                503: _UNAVAILABLE,
            },
        )
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        provider = self._provider(name)
        body = load(RedemptionIn(), read_json_object(req))
        outcome = run_command(
            self._services,
            partial(
                identities.sign_in_with_provider,
                provider=provider,
                redemption=identities.Redemption(**body),
                address=self._client(req),
                user_agent=req.user_agent,
            ),
        )
        if isinstance(outcome, SignedIn):
            send_signed_in(resp, outcome, 200)
        else:
            send_object(resp, SignupOfferOut().dump(outcome), 202)


class TicketSignup(_IdentityResource):
    @documented(
        Operation(
            "signUpWithTicket",
            "Create the account a sign-up ticket offered (single use, 10 minutes); it has no "
            "password until one is set by a password reset.",
            (Reply(201, "The account, a token and a device.", SignedInOut, headers=("Location",)),),
            tag=_TAG,
            body=TicketSignupIn,
            errors={
                400: "The ticket is unknown, used or expired.",
                409: "The username is taken, or the email was taken meanwhile (named in `fields`).",
                429: "Too many sign-ups from this address, or from everyone, lately.",
            },
        )
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(TicketSignupIn(), read_json_object(req))
        signed_in = run_command(
            self._services,
            partial(
                identities.sign_up_with_ticket,
                **body,
                address=self._client(req),
                user_agent=req.user_agent,
            ),
        )
        resp.location = f"/api/users/{signed_in.user.username}/"
        send_signed_in(resp, signed_in, 201)


class Identities(_IdentityResource):
    """The caller's identities: ``/api/users/me/identities/``."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self._reader = Reader(services)

    @documented(
        Operation(
            "listIdentities",
            "The identities linked to the caller's account.",
            (Reply(200, "Every identity.", IdentityList, headers=("X-Gridlink-Read-Source",)),),
            tag=_TAG,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_get(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        rows, source = self._reader.read(
            principal, partial(read_identities, user_id=principal.user_id)
        )
        resp.set_header(READ_SOURCE_HEADER, source.name)
        resp.cache_control = ["no-store"]
        send_object(resp, IdentityList().dump({"data": rows, "has_more": False}))

    @documented(
        Operation(
            "linkIdentity",
            "Redeem a provider's code and link the identity to the caller's account.",
            (Reply(201, "The identity.", IdentityOut, headers=("Idempotent-Replayed",)),),
            tag=_TAG,
            body=IdentityLinkIn,
            creates=True,
            errors={
                400: _REFUSED,
                404: _UNKNOWN_PROVIDER,
                409: "The identity is linked already (to this account or another).",
                503: _UNAVAILABLE,
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        raw = read_json_object(req)
        body = load(IdentityLinkIn(), raw)
        provider = self._provider(body.pop("provider"))
        answer = run_creating_command(
            self._services,
            principal.user_id,
            idempotency_key(req, raw),
            partial(
                identities.link_identity,
                principal=principal,
                provider=provider,
                redemption=identities.Redemption(**body),
            ),
            _created,
        )
        send_answer(resp, answer)

    @documented(
        Operation(
            "unlinkIdentity",
            "Unlink one of the caller's identities.",
            (Reply(204, "Unlinked."),),
            tag=_TAG,
            path={"id": IDENTITY_ID},
            body=NoBodyIn,
            body_required=False,
            errors={
                404: "No identity of the caller has this id.",
                409: "It is the account's only way to sign in (no password, no other identity).",
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, id: str, principal: Principal
    ) -> None:
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(
            self._services,
            partial(identities.unlink_identity, principal=principal, identity_id=id),
        )
        resp.status = falcon.HTTP_204


def _created(identity: Identity) -> Answer:
    document: dict[str, Any] = IdentityOut().dump(
        {
            "id": identity.public_id,
            "provider": identity.provider,
            "subject": identity.subject,
            "email": identity.email,
            "created": identity.created_on,
        }
    )
    return Answer(201, orjson.dumps(document))


def add_routes(app: App, services: Services) -> None:
    """Mount sign-in with providers and the identities (each with or without its slash)."""
    app.add_route("/api/auth/oidc", Providers(services))
    # A literal segment: Falcon prefers it to {name} (and no provider may be named so).
    app.add_route("/api/auth/oidc/signup", TicketSignup(services))
    app.add_route("/api/auth/oidc/{name}", SignIn(services))
    resource = Identities(services)
    app.add_route("/api/users/me/identities", resource)
    app.add_route("/api/users/me/identities/{id}", resource, suffix="item")
