"""Sign-in with an OpenID provider through real gunicorn workers, configured by environment.

The providers reach the workers as every setting does (``Settings.to_environ``,
client secrets included, never on a command line), and each worker keeps its
own discovery and keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.oidc_provider import OpenIdProvider
from tests.support.servers import call, serving


@pytest.fixture(scope="module")
def server(
    settings: Settings, openid_providers: dict[str, OpenIdProvider], tmp_path_factory
) -> Iterator[tuple[str, Path]]:
    local = openid_providers["local"]
    log = tmp_path_factory.mktemp("oidc-e2e") / "server.log"
    with serving(settings.replace(oidc_providers=(local.configured(),)), log=log) as started:
        yield started[0].address, log


def test_a_new_identity_signs_up_and_then_signs_in_over_http(server, openid_providers):
    address, log = server
    local = openid_providers["local"]
    status, listed = call(address, "GET", "/api/auth/oidc/")
    assert status == 200
    assert [entry["name"] for entry in listed["data"]] == ["local"]
    account = f"e2e{random_username('')}"
    status, offered = call(address, "POST", "/api/auth/oidc/local/", local.sign_in(account).body())
    assert status == 202, offered
    username = random_username("e2e")
    status, created = call(
        address,
        "POST",
        "/api/auth/oidc/signup/",
        {"signup_ticket": offered["signup_ticket"], "username": username},
    )
    assert status == 201, created
    status, signed_in = call(
        address, "POST", "/api/auth/oidc/local/", local.sign_in(account).body()
    )
    assert (status, signed_in["user"]["username"]) == (200, username)
    status, me = call(address, "GET", "/api/users/me/identities/", token=signed_in["token"])
    assert (status, [identity["subject"] for identity in me["data"]]) == (200, [account])
    # The client secret went through the environment: never into the server's log.
    assert local.client_secret not in log.read_text()
