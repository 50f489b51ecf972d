"""The accounts endpoints: sign-up, login, logout, passwords and ``/api/users/me/``."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.accounts.throttles import SESSION_CHECKS_THROTTLED
from gridlink.accounts.tokens import Principal
from gridlink.commands import accounts, identities, passwords, sessions
from gridlink.commands.unit_of_work import run_command
from gridlink.queries.accounts import read_me
from gridlink.queries.reader import Reader
from gridlink.resources.params import UNKNOWN_PROVIDER, identity_provider
from gridlink.resources.responses import READ_SOURCE_HEADER
from gridlink.schemas.accounts import (
    ACCOUNT_DELETIONS,
    EmailConfirmIn,
    LoginIn,
    MeOut,
    MeUpdateIn,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    PasswordResetIn,
    SignedInOut,
    SignupIn,
    load_account_deletion,
)
from gridlink.schemas.base import NoBodyIn, load
from gridlink.services import Services
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import (
    App,
    client_address,
    read_json_object,
    read_optional_json_object,
    send_object,
)
from gridlink.web.openapi import Link, Operation, Reply, documented


def send_signed_in(resp: falcon.Response, signed_in: sessions.SignedIn, status: int) -> None:
    send_object(resp, SignedInOut().dump(signed_in), status)


_SIGNED_IN = "The account, a new token, and the device to present at the next login."
_THROTTLED = (
    "Too many failed logins for this account from this client, for this account from "
    "clients without a device of it, or from this address."
)
_WEAK = "The new password is too short, too long, or common (named in `fields`)."
_TAG = "accounts"


def _revoking(operation_id: str, summary: str) -> Operation:
    """Describe a logout: no body (or ``{}``), 204 once the tokens are revoked."""
    return Operation(
        operation_id,
        summary,
        (Reply(204, "Revoked."),),
        tag=_TAG,
        body=NoBodyIn,
        body_required=False,
    )


class _AccountsResource:
    def __init__(self, services: Services) -> None:
        self._services = services

    def _client(self, req: falcon.Request) -> str:
        """The client's address, behind trusted proxies: what per-address limits count."""
        return client_address(req, self._services.settings.trusted_proxies)


class Signup(_AccountsResource):
    @documented(
        Operation(
            "signUp",
            "Create an account and log in.",
            (
                Reply(
                    201,
                    _SIGNED_IN,
                    SignedInOut,
                    headers=("Location",),
                    links={
                        "GetProfile": Link(
                            "getProfile", {"username": "$response.body#/user/username"}
                        )
                    },
                ),
            ),
            tag=_TAG,
            body=SignupIn,
            errors={
                400: _WEAK,
                409: "The username or the email is taken (named in `fields`).",
                429: "Too many sign-ups from this address, or from everyone, lately.",
            },
        )
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(SignupIn(), read_json_object(req))
        signed_in = run_command(
            self._services,
            partial(accounts.sign_up, **body, address=self._client(req), user_agent=req.user_agent),
        )
        resp.location = f"/api/users/{signed_in.user.username}/"
        send_signed_in(resp, signed_in, 201)


class Login(_AccountsResource):
    @documented(
        Operation(
            "logIn",
            "Log in with a username or an email: a new token each time.",
            (Reply(200, _SIGNED_IN, SignedInOut),),
            tag=_TAG,
            body=LoginIn,
            errors={
                401: "Wrong credentials (the same answer whether the user exists or not).",
                429: _THROTTLED,
            },
        )
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(LoginIn(), read_json_object(req))
        signed_in = run_command(
            self._services,
            partial(
                sessions.log_in,
                login=body["username"],
                password=body["password"],
                address=self._client(req),
                device=body.get("device"),
                user_agent=req.user_agent,
            ),
        )
        send_signed_in(resp, signed_in, 200)


class Logout(_AccountsResource):
    @documented(_revoking("logOut", "Revoke this token, at once in every server process."))
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(self._services, partial(sessions.log_out, principal=principal))
        resp.status = falcon.HTTP_204


class LogoutEverywhere(_AccountsResource):
    @documented(_revoking("logOutEverywhere", "Revoke every token of the caller."))
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(self._services, partial(sessions.log_out_everywhere, principal=principal))
        resp.status = falcon.HTTP_204


class PasswordChange(_AccountsResource):
    @documented(
        Operation(
            "changePassword",
            "Change the password; every other token and every mailed token is revoked, "
            "and the owner is mailed a notice.",
            (Reply(204, "Changed."),),
            tag=_TAG,
            body=PasswordChangeIn,
            errors={
                400: "The current password is not correct, or the new one is weak.",
                429: SESSION_CHECKS_THROTTLED,
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        body = load(PasswordChangeIn(), read_json_object(req))
        run_command(self._services, partial(passwords.change_password, principal=principal, **body))
        resp.status = falcon.HTTP_204


class PasswordReset(_AccountsResource):
    @documented(
        Operation(
            "requestPasswordReset",
            "Mail a single-use reset token, valid for an hour, if the email is known.",
            (Reply(202, "Accepted, whether or not the email is known."),),
            tag=_TAG,
            body=PasswordResetIn,
            errors={429: "Too many requests for this email or from this address."},
        )
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(PasswordResetIn(), read_json_object(req))
        run_command(
            self._services,
            partial(passwords.request_password_reset, **body, address=self._client(req)),
        )
        resp.status = falcon.HTTP_202


class PasswordResetConfirm(_AccountsResource):
    @documented(
        Operation(
            "confirmPasswordReset",
            "Set a new password with a mailed reset token; every token of the user is revoked, "
            "and the owner is mailed a notice.",
            (Reply(204, "Changed."),),
            tag=_TAG,
            body=PasswordResetConfirmIn,
            errors={400: "The reset token is unknown, used or expired, or the password weak."},
        )
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(PasswordResetConfirmIn(), read_json_object(req))
        run_command(self._services, partial(passwords.confirm_password_reset, **body))
        resp.status = falcon.HTTP_204


class Me(_AccountsResource):
    """The caller's own account: ``/api/users/me/``."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self._reader = Reader(services)

    @documented(
        Operation(
            "getMe",
            "The caller's own account.",
            (Reply(200, "The account.", MeOut, headers=("X-Gridlink-Read-Source",)),),
            tag=_TAG,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_get(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        me, source = self._reader.read(principal, partial(read_me, user_id=principal.user_id))
        resp.set_header(READ_SOURCE_HEADER, source.name)
        # The email and the admin flag: no cache, the browser's included, keeps a copy.
        resp.cache_control = ["no-store"]
        send_object(resp, MeOut().dump(me))

    @documented(
        Operation(
            "updateMe",
            "Change the caller's display name; ask to change the email "
            "(with `current_password`: a token is mailed to the new address, "
            "the old one is told; the same answer whether or not the address is taken).",
            (Reply(200, "The account (with its email unchanged until confirmed).", MeOut),),
            tag=_TAG,
            body=MeUpdateIn,
            errors={
                400: "`current_password` is missing or not correct for an email change.",
                409: "The password changed while the email change was asked for.",
                429: f"{SESSION_CHECKS_THROTTLED} Or too many email changes for this account "
                "in an hour.",
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_patch(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        body = load(MeUpdateIn(), read_json_object(req))
        user = run_command(
            self._services, partial(accounts.update_me, principal=principal, changes=body)
        )
        send_object(resp, MeOut().dump(user))

    @documented(
        Operation(
            "deleteMe",
            "Delete the account with its grids, links and identities; its profile is gone at "
            "once. Confirmed by the password, or by a fresh sign-in at a provider whose "
            "identity is linked to the account (an account made through a provider has no "
            "password): the code, PKCE verifier, redirect URI and nonce of that sign-in.",
            (Reply(204, "Deleted."),),
            tag=_TAG,
            body=ACCOUNT_DELETIONS,
            errors={
                400: "The password is not correct, or the account has none; both or neither of "
                "the password and a provider's fields were sent (named in `fields`); or the "
                "provider's code or ID token failed verification.",
                403: "The provider's identity is not linked to this account.",
                404: UNKNOWN_PROVIDER,
                429: SESSION_CHECKS_THROTTLED,
                503: "The provider cannot be reached; try again after Retry-After.",
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_delete(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        body = load_account_deletion(read_optional_json_object(req))
        if "password" in body:
            delete = partial(accounts.delete_account, principal=principal, **body)
        else:
            delete = partial(
                identities.delete_account_with_identity,
                principal=principal,
                provider=identity_provider(self._services, body.pop("provider")),
                redemption=identities.Redemption(**body),
            )
        run_command(self._services, delete)
        resp.status = falcon.HTTP_204


class EmailConfirm(_AccountsResource):
    @documented(
        Operation(
            "confirmEmailChange",
            "Switch the caller's email to the new one, with the token mailed to it.",
            (Reply(200, "The account, with its new email.", MeOut),),
            tag=_TAG,
            body=EmailConfirmIn,
            errors={
                400: "The token is unknown, another account's, used or expired.",
                409: "Another account took the email meanwhile.",
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        body = load(EmailConfirmIn(), read_json_object(req))
        user = run_command(
            self._services, partial(accounts.confirm_email_change, principal=principal, **body)
        )
        send_object(resp, MeOut().dump(user))


def add_routes(app: App, services: Services) -> None:
    """Mount the accounts endpoints (the app serves each with or without its trailing slash)."""
    app.add_route("/api/auth/signup", Signup(services))
    app.add_route("/api/auth/login", Login(services))
    app.add_route("/api/auth/logout", Logout(services))
    app.add_route("/api/auth/logout-all", LogoutEverywhere(services))
    app.add_route("/api/auth/password/change", PasswordChange(services))
    app.add_route("/api/auth/password/reset", PasswordReset(services))
    app.add_route("/api/auth/password/reset/confirm", PasswordResetConfirm(services))
    # A literal segment: Falcon prefers it to the profiles' /api/users/{username}.
    app.add_route("/api/users/me", Me(services))
    app.add_route("/api/users/me/email/confirm", EmailConfirm(services))
