"""``GET /api/users/<username>/``: the public profile, as stored bytes."""

from __future__ import annotations

import falcon

from gridlink.http import App
from gridlink.openapi import USERNAME, Auth, Operation, Reply, documented
from gridlink.queries.profiles import Profiles
from gridlink.queries.reader import Reader
from gridlink.resources.responses import READ_SOURCE_HEADER, send_read
from gridlink.schemas.profiles import ProfileOut
from gridlink.services import Services


def matches(req: falcon.Request, version: int) -> bool:
    """Tell whether the client's ``If-None-Match`` names this version."""
    return any(tag in ("*", str(version)) for tag in req.if_none_match or ())


class Profile:
    def __init__(self, profiles: Profiles) -> None:
        self._profiles = profiles

    @documented(
        Operation(
            "getProfile",
            "A user's public profile: every live grid with its live links.",
            (
                Reply(200, "The profile.", ProfileOut, headers=("ETag", "X-Gridlink-Read-Source")),
                Reply(304, "If-None-Match names the current ETag.", headers=("ETag",)),
            ),
            tag="profiles",
            auth=Auth.OPTIONAL,
            path={"username": USERNAME},
            conditional=True,
            errors={404: "No such user."},
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        stored, source = self._profiles.find(username, req.context.principal)
        if stored is not None:
            resp.etag = str(stored.version)
            if matches(req, stored.version):
                resp.set_header(READ_SOURCE_HEADER, source.name)
                resp.status = falcon.HTTP_304
                return
        send_read(resp, stored.document if stored else None, source, "No such user.")


def add_routes(app: App, services: Services) -> None:
    app.add_route("/api/users/{username}", Profile(Profiles(services, Reader(services))))
