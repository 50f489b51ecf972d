"""``GET /api/users/<username>/``: the public profile, as stored bytes.

An anonymous ``GET`` is the hot path: ``AnonymousProfileReads`` answers it
before Falcon builds a request, with the same headers, log line and metrics
as the ``Profile`` resource (tests/integration/test_profile_hit_path.py
compares the two answer by answer). Anything else about the request (a token,
a body, another method, a name of another form) goes to the resource.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import falcon
from falcon.request_helpers import _parse_etags  # what req.if_none_match parses with

from gridlink.accounts.tokens import Principal
from gridlink.errors import NotFound, error_body
from gridlink.queries.profiles import Profiles, StoredProfile
from gridlink.queries.reader import Reader, ReadSource
from gridlink.resources.responses import READ_SOURCE_HEADER, send_read
from gridlink.schemas.profiles import ProfileOut
from gridlink.services import Services
from gridlink.slugs import USERNAME_PATTERN, is_username
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import App, request_id
from gridlink.web.observability import RequestObserver
from gridlink.web.openapi import USERNAME, Operation, Reply, documented
from gridlink.web.security import SECURITY_HEADERS, BrowserHeadersMiddleware, cache_control_for

ROUTE = "/api/users/{username}"
NO_SUCH_USER = "No such user."


def matches(if_none_match: Iterable[str] | None, version: int) -> bool:
    """Tell whether the client's ``If-None-Match`` tags name this version."""
    return any(tag in ("*", str(version)) for tag in if_none_match or ())


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
            path={"username": USERNAME},
            conditional=True,
            errors={404: "No such user."},
        )
    )
    @authenticate(Auth.OPTIONAL)
    def on_get(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        username: str,
        principal: Principal | None,
    ) -> None:
        if not is_username(username):
            # No account has this name: nothing to look up. Checked before the
            # cache too, whose keys are case-folded ("\u212aarl" folds to "karl").
            raise NotFound(NO_SUCH_USER)
        stored, source = self._profiles.find(username, principal)
        if stored is not None:
            resp.etag = str(stored.version)
            if matches(req.if_none_match, stored.version):
                resp.set_header(READ_SOURCE_HEADER, source.name)
                resp.status = falcon.HTTP_304
                return
        send_read(resp, stored.document if stored else None, source, NO_SUCH_USER)


# The one path the fast path takes: a username of the valid form (the
# pattern without its \A and \Z), with or without the trailing slash
# (``app.req_options.strip_url_path_trailing_slash``). "me" is too short to
# be a username, so ``/api/users/me/`` is never taken here.
_PROFILE_PATH = re.compile(r"/api/users/(" + USERNAME_PATTERN[2:-2] + r")/?\Z")
_SECURITY = [(name.lower(), value) for name, value in SECURITY_HEADERS.items()]
_NOT_FOUND_BODY = error_body(NotFound.type, NO_SUCH_USER)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class AnonymousProfileReads:
    """Answer an anonymous ``GET`` of a profile without Falcon's request machinery.

    Everything an answer from the ``Profile`` resource carries is here too:
    ``X-Request-Id``, ``ETag`` and 304, ``X-Gridlink-Read-Source``, the
    security, cache and CORS headers, the request's log line and metrics.
    """

    def __init__(
        self,
        profiles: Profiles,
        observer: RequestObserver,
        browser_headers: BrowserHeadersMiddleware,
    ) -> None:
        self._profiles = profiles
        self._observer = observer
        self._browser_headers = browser_headers

    def __call__(self, env: dict[str, Any], start_response: StartResponse) -> list[bytes] | None:
        """Answer the request, or return None to leave it to the Falcon app."""
        if env["REQUEST_METHOD"] != "GET" or "HTTP_AUTHORIZATION" in env:
            return None
        if env.get("CONTENT_LENGTH") not in (None, "", "0") or "HTTP_TRANSFER_ENCODING" in env:
            return None  # the body rules (413, framing) are the middleware's
        found = _PROFILE_PATH.match(env.get("PATH_INFO", ""))
        if found is None:
            return None
        started = time.perf_counter()
        try:
            stored, source = self._profiles.find(found.group(1), None)
        except Exception:
            return None  # the app's error handlers answer (and log) it, reading again
        status, headers, body = self._answer(env, stored, source)
        answer_id = request_id(env.get("HTTP_X_REQUEST_ID"))
        headers.append(("x-request-id", answer_id))
        start_response(status, headers)
        path = env["PATH_INFO"]
        self._observer.record(
            method="GET",
            route=ROUTE,
            path=path[:-1] if path.endswith("/") else path,
            remote_addr=env.get("REMOTE_ADDR", "127.0.0.1"),  # Falcon's req.remote_addr
            status=int(status[:3]),
            duration_seconds=time.perf_counter() - started,
            read_source=source.name,
            request_id=answer_id,
        )
        return [body] if body else []

    def _answer(
        self, env: dict[str, Any], stored: StoredProfile | None, source: ReadSource
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        headers = [(READ_SOURCE_HEADER.lower(), source.name)]
        if stored is None:
            status, body = falcon.HTTP_404, _NOT_FOUND_BODY
        else:
            headers.append(("etag", f'"{stored.version}"'))
            tags = env.get("HTTP_IF_NONE_MATCH")
            if tags and matches(_parse_etags(tags), stored.version):
                status, body = falcon.HTTP_304, b""
            else:
                status, body = falcon.HTTP_200, stored.document
        if body:
            headers += [("content-type", falcon.MEDIA_JSON), ("content-length", str(len(body)))]
        cache_control = cache_control_for("GET", int(status[:3]), authorized=False)
        headers += _SECURITY
        headers.append(("cache-control", cache_control))
        headers += self._browser_headers.cors_headers(env.get("HTTP_ORIGIN"))
        return status, headers, body


def add_routes(app: App, services: Services) -> None:
    app.add_route(ROUTE, Profile(Profiles(services, Reader(services))))
