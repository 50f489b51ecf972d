"""Accounts over real HTTP, across two gunicorn servers sharing the test cluster.

Two servers of one worker each make "another server process" certain: a token
revoked through one must be refused by the other on its very next request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.servers import call, serving


@pytest.fixture(scope="module")
def servers(settings: Settings) -> Iterator[list[str]]:
    """Two gunicorn servers with one worker each, for the module."""
    with serving(settings, count=2) as started:
        yield [server.address for server in started]


def test_a_user_signs_up_logs_in_and_out_across_two_servers(servers):
    first, second = servers
    username = random_username("e2e")
    password = "an e2e password"
    status, signed_up = call(
        first,
        "POST",
        "/api/auth/signup/",
        {"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert status == 201, signed_up
    # Issued by one server, accepted at once by the other.
    status, me = call(second, "GET", "/api/users/me/", token=signed_up["token"])
    assert (status, me["username"]) == (200, username)

    status, logged_in = call(
        second, "POST", "/api/auth/login/", {"username": username, "password": password}
    )
    assert status == 200, logged_in
    token = logged_in["token"]
    assert call(first, "GET", "/api/users/me/", token=token)[0] == 200

    # A body-less logout, as curl sends it; then the other server refuses the token.
    assert call(first, "POST", "/api/auth/logout/", token=token)[0] == 204
    status, refused = call(second, "GET", "/api/users/me/", token=token)
    assert (status, refused["error"]["type"]) == (401, "unauthenticated")
    assert call(second, "GET", "/api/users/me/", token=signed_up["token"])[0] == 200

    assert call(second, "POST", "/api/auth/logout-all/", token=signed_up["token"])[0] == 204
    assert call(first, "GET", "/api/users/me/", token=signed_up["token"])[0] == 401
