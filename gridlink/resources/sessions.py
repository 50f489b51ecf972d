"""The caller's sessions: ``/api/auth/sessions/``, each one a live token, listed and ended."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.accounts.tokens import Principal
from gridlink.commands import sessions
from gridlink.commands.unit_of_work import run_command
from gridlink.queries.sessions import read_sessions
from gridlink.schemas.accounts import SessionList
from gridlink.schemas.base import NoBodyIn, load
from gridlink.services import Services
from gridlink.slugs import SESSION_PREFIX, slug_json_pattern
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import App, read_optional_json_object, send_object
from gridlink.web.openapi import Operation, Reply, documented

_TAG = "accounts"
SESSION_ID = ({"type": "string", "pattern": slug_json_pattern(SESSION_PREFIX)}, "The session's id.")


class Sessions:
    def __init__(self, services: Services) -> None:
        self._services = services

    @documented(
        Operation(
            "listSessions",
            "The caller's live tokens, as sessions: when each began and was last used "
            "(to the hour), the client that logged in, and which one is this.",
            (Reply(200, "Every live session of the caller.", SessionList),),
            tag=_TAG,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_get(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        # The primary: a session begun or ended a moment ago shows as such.
        with self._services.primary.connect() as connection:
            rows = read_sessions(
                connection,
                user_id=principal.user_id,
                current_hash=principal.token_hash,
                idle_days=self._services.settings.token_idle_days,
            )
        # Where the caller's clients were: for them alone, and kept by no cache.
        resp.cache_control = ["no-store"]
        send_object(resp, SessionList().dump({"data": rows, "has_more": False}))

    @documented(
        Operation(
            "endSession",
            "Revoke one of the caller's tokens, at once in every server process.",
            (Reply(204, "Revoked."),),
            tag=_TAG,
            path={"id": SESSION_ID},
            body=NoBodyIn,
            body_required=False,
            errors={404: "No live session of the caller has this id."},
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, id: str, principal: Principal
    ) -> None:
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(
            self._services, partial(sessions.end_session, principal=principal, session_id=id)
        )
        resp.status = falcon.HTTP_204


def add_routes(app: App, services: Services) -> None:
    """Mount the sessions endpoints (each served with or without its trailing slash)."""
    resource = Sessions(services)
    app.add_route("/api/auth/sessions", resource)
    # {id}, as API.md names it: the document's path must be the contract's.
    app.add_route("/api/auth/sessions/{id}", resource, suffix="item")
