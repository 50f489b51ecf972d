"""Every route refuses exactly the callers its OpenAPI description says it refuses.

The routes are walked from the app's own route table (Falcon's inspector), and
what each one requires is read from the document the app serves: each is then
asked without a token, with a non-admin's and, where only admins may call it,
with an admin's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import falcon
import falcon.inspect
import falcon.testing
import hypothesis
import hypothesis.strategies as st
import pytest

from gridlink.app import create_app
from gridlink.errors import Unauthenticated
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.web.openapi import NOT_AN_ADMIN, Operation, Reply, documented, documented_path
from tests.support.api import ApiUser, auth, login, me_status, sign_up
from tests.support.metrics import make_admin

Route = tuple[str, str]  # (uri_template, method)
# A live token of the caller: a logout revokes the one it is sent with.
TokenOf = Callable[[ApiUser], str]


def served_routes(app: Any) -> list[Route]:
    """Every (uri_template, method) the app serves, from Falcon's own route table."""
    return sorted(
        (route.path, method.method)
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
    )


def example(schema: dict[str, Any]) -> str:
    """Write the simplest value ``schema`` accepts (an object it names cannot exist)."""
    if schema.get("type") == "integer":
        return str(schema["minimum"])
    return simplest_match(schema["pattern"])


@functools.cache
def simplest_match(pattern: str) -> str:
    found: str = hypothesis.find(st.from_regex(pattern, fullmatch=True), lambda _: True)
    return found


def mismatches(
    client: falcon.testing.TestClient,
    document: dict[str, Any],
    route: Route,
    user: ApiUser,
    admin: ApiUser,
    token_of: TokenOf,
) -> list[str]:
    """Ask ``route`` without a token and with tokens; say where it disagrees with ``document``."""
    uri_template, method = route
    operation = document["paths"][documented_path(uri_template)][method.lower()]
    token_required = operation.get("security") == [{"token": []}]
    forbidden = operation["responses"].get("403", {}).get("description", "")
    admin_only = token_required and forbidden.startswith(NOT_AN_ADMIN)
    parameters = operation.get("parameters", [])
    path = re.sub(
        r"{(\w+)}",
        lambda field: next(
            example(parameter["schema"])
            for parameter in parameters
            if parameter["in"] == "path" and parameter["name"] == field.group(1)
        ),
        uri_template,
    )
    # Every query parameter filled in: ``?grid=`` is what makes a link list public.
    query = {p["name"]: example(p["schema"]) for p in parameters if p["in"] == "query"}

    def ask(headers: dict[str, str]) -> falcon.testing.Result:
        return client.simulate_request(method, path, params=query, headers=headers)

    found = []
    anonymous = ask({})
    if token_required != (anonymous.status_code == 401):
        found.append(f"{method} {path} without a token: {anonymous.status_code}")
    elif token_required and (
        anonymous.headers.get("WWW-Authenticate") != "Token"
        or anonymous.json["error"]["type"] != "unauthenticated"
    ):
        found.append(f"{method} {path} without a token: {anonymous.headers} {anonymous.text}")
    as_user = ask(auth(token_of(user)))
    if as_user.status_code == 401 or admin_only != (as_user.status_code == 403):
        found.append(f"{method} {path} as a user: {as_user.status_code}")
    elif admin_only and as_user.json["error"]["type"] != "permission_denied":
        found.append(f"{method} {path} as a user: {as_user.text}")
    if admin_only:
        as_admin = ask(auth(token_of(admin)))
        if as_admin.status_code in (401, 403):
            found.append(f"{method} {path} as an admin: {as_admin.status_code}")
    return found


@pytest.fixture(scope="module")
def callers(client, services) -> tuple[ApiUser, ApiUser, TokenOf]:
    user = sign_up(client, "caller")
    admin = make_admin(client, services)
    tokens = {user.username: user.token, admin.username: admin.token}

    def token_of(caller: ApiUser) -> str:
        if me_status(client, tokens[caller.username]) != 200:
            logged_in = login(client, caller.username, caller.password)
            assert logged_in.status_code == 200, logged_in.text
            tokens[caller.username] = logged_in.json["token"]
        return tokens[caller.username]

    return user, admin, token_of


def test_every_route_refuses_exactly_the_callers_its_description_says(client, callers):
    document = client.simulate_get("/api/openapi.json").json
    routes = served_routes(client.app)
    assert len(routes) > 20
    found = [
        mismatch for route in routes for mismatch in mismatches(client, document, route, *callers)
    ]
    assert found == []


class _SaysAnyoneButWantsAToken:
    """A responder that checks a token in its own body instead of declaring it."""

    @documented(
        Operation("lying", "Says anyone may call it.", (Reply(200, "Served."),), tag="operations")
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.context.principal is None:
            raise Unauthenticated()
        resp.media = {}


def test_a_route_enforcing_what_it_does_not_document_is_found(
    settings: Settings, services: Services, callers
):
    app = create_app(settings, services)
    app.add_route("/api/lying", _SaysAnyoneButWantsAToken())
    client = falcon.testing.TestClient(app)
    document = client.simulate_get("/api/openapi.json").json
    assert ("/api/lying", "GET") in served_routes(app)
    found = mismatches(client, document, ("/api/lying", "GET"), *callers)
    assert found == ["GET /api/lying without a token: 401"]
