"""Limits per client address behind a load balancer: the client is taken from
X-Forwarded-For only when a trusted proxy sent it (GRIDLINK_TRUSTED_PROXIES)."""

from __future__ import annotations

import secrets

import falcon.testing

from gridlink.settings import TrustedProxies
from tests.support.abuse import app_with, assert_clean_result
from tests.support.api import random_username

PROXY = "10.77.0.5"
FAILURES_PER_ADDRESS = 50


def a_client() -> str:
    return f"198.51.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


def bad_login(
    client: falcon.testing.TestClient, peer: str, forwarded_for: str
) -> falcon.testing.Result:
    # A new username each time: only the limit per address can refuse it.
    return client.simulate_post(
        "/api/auth/login/",
        json={"username": random_username("nobody"), "password": "wrong password"},
        remote_addr=peer,
        headers={"X-Forwarded-For": forwarded_for},
    )


def test_behind_a_trusted_proxy_one_clients_failures_never_block_another(services):
    client = app_with(
        services,
        trusted_proxies=TrustedProxies.parse("10.77.0.0/16"),
        login_failures_per_address=FAILURES_PER_ADDRESS,
    )
    attacker, bystander = a_client(), a_client()
    for _ in range(FAILURES_PER_ADDRESS):
        assert bad_login(client, PROXY, attacker).status_code == 401
    assert assert_clean_result(bad_login(client, PROXY, attacker), 429) == "rate_limited"
    # Same proxy, another client: still only told the password is wrong.
    assert bad_login(client, PROXY, bystander).status_code == 401


def test_an_untrusted_peers_forwarded_for_is_ignored(services):
    client = app_with(services, login_failures_per_address=3)
    peer = a_client()
    for _ in range(3):
        assert bad_login(client, peer, a_client()).status_code == 401
    # A new X-Forwarded-For each time changed nothing: the peer is the client.
    assert assert_clean_result(bad_login(client, peer, a_client()), 429) == "rate_limited"
