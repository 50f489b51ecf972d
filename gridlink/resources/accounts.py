"""The accounts endpoints: sign-up, login, logout, passwords and ``/api/users/me/``."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.auth import require_principal
from gridlink.commands import accounts
from gridlink.http import App, read_json_object, read_optional_json_object, send_object
from gridlink.queries.accounts import read_me
from gridlink.queries.reader import Reader
from gridlink.resources.responses import READ_SOURCE_HEADER
from gridlink.schemas.accounts import (
    AccountDeleteIn,
    LoginIn,
    MeOut,
    MeUpdateIn,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    PasswordResetIn,
    SignupIn,
)
from gridlink.schemas.base import NoBodyIn, load
from gridlink.services import Services


def send_signed_in(resp: falcon.Response, signed_in: accounts.SignedIn, status: int) -> None:
    send_object(resp, {"user": MeOut().dump(signed_in.user), "token": signed_in.token}, status)


class _AccountsResource:
    def __init__(self, services: Services) -> None:
        self._services = services


class Signup(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(SignupIn(), read_json_object(req))
        signed_in = accounts.sign_up(self._services, **body)
        resp.location = f"/api/users/{signed_in.user.username}/"
        send_signed_in(resp, signed_in, 201)


class Login(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(LoginIn(), read_json_object(req))
        signed_in = accounts.log_in(
            self._services,
            login=body["username"],
            password=body["password"],
            address=req.remote_addr,
        )
        send_signed_in(resp, signed_in, 200)


class Logout(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        load(NoBodyIn(), read_optional_json_object(req))
        accounts.log_out(self._services, principal)
        resp.status = falcon.HTTP_204


class LogoutEverywhere(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        load(NoBodyIn(), read_optional_json_object(req))
        accounts.log_out_everywhere(self._services, principal)
        resp.status = falcon.HTTP_204


class PasswordChange(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        body = load(PasswordChangeIn(), read_json_object(req))
        accounts.change_password(self._services, principal, **body)
        resp.status = falcon.HTTP_204


class PasswordReset(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(PasswordResetIn(), read_json_object(req))
        accounts.request_password_reset(self._services, **body, address=req.remote_addr)
        resp.status = falcon.HTTP_202


class PasswordResetConfirm(_AccountsResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = load(PasswordResetConfirmIn(), read_json_object(req))
        accounts.confirm_password_reset(self._services, **body)
        resp.status = falcon.HTTP_204


class Me(_AccountsResource):
    """The caller's own account: ``/api/users/me/``."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self._reader = Reader(services)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        me, source = self._reader.read(principal, partial(read_me, user_id=principal.user_id))
        resp.set_header(READ_SOURCE_HEADER, source.name)
        send_object(resp, MeOut().dump(me))

    def on_patch(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        body = load(MeUpdateIn(), read_json_object(req))
        user = accounts.update_me(self._services, principal, body)
        send_object(resp, MeOut().dump(user))

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        body = load(AccountDeleteIn(), read_optional_json_object(req))
        accounts.delete_account(self._services, principal, **body)
        resp.status = falcon.HTTP_204


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
