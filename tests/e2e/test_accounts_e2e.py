"""Accounts over real HTTP, across two gunicorn servers sharing the test cluster.

Two servers of one worker each make "another server process" certain: a token
revoked through one must be refused by the other on its very next request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.servers import call, serving, sign_up_at


@pytest.fixture(scope="module")
def servers(settings: Settings) -> Iterator[list[str]]:
    """Two gunicorn servers with one worker each, for the module."""
    with serving(settings, count=2) as started:
        yield [server.address for server in started]


def test_a_user_signs_up_logs_in_and_out_across_two_servers(servers):
    first, second = servers
    username, password = random_username("e2e"), "an e2e password"
    first_token = sign_up_at(first, username, password)
    # Issued by one server, accepted at once by the other.
    status, me = call(second, "GET", "/api/users/me/", token=first_token)
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
    assert call(second, "GET", "/api/users/me/", token=first_token)[0] == 200

    assert call(second, "POST", "/api/auth/logout-all/", token=first_token)[0] == 204
    assert call(first, "GET", "/api/users/me/", token=first_token)[0] == 401


def test_a_session_listed_on_one_server_and_ended_there_is_refused_by_the_other(servers):
    first, second = servers
    username, password = random_username("sess"), "an e2e password"
    first_token = sign_up_at(first, username, password)
    status, logged_in = call(
        second,
        "POST",
        "/api/auth/login/",
        {"username": username, "password": password},
        headers={"User-Agent": "e2e-phone/1.0"},
    )
    assert status == 200, logged_in
    phone = logged_in["token"]
    assert call(second, "GET", "/api/users/me/", token=phone)[0] == 200  # cached as valid there

    status, listed = call(first, "GET", "/api/auth/sessions/", token=first_token)
    assert status == 200, listed
    this_one, the_phone = listed["data"]
    assert (this_one["current"], the_phone["current"]) == (True, False)
    assert the_phone["user_agent"] == "e2e-phone/1.0"
    assert the_phone["client_address"] == "127.0.0.1"

    status, _ = call(first, "DELETE", f"/api/auth/sessions/{the_phone['id']}/", token=first_token)
    assert status == 204
    status, refused = call(second, "GET", "/api/users/me/", token=phone)
    assert (status, refused["error"]["type"]) == (401, "unauthenticated")
    status, listed = call(second, "GET", "/api/auth/sessions/", token=first_token)
    assert [session["id"] for session in listed["data"]] == [this_one["id"]]
