"""Accounts with Redis or the primary down: stopped for real, and always started again.

The module stops Redis (which then reloads its saved data on every later
start) and the primary, so it runs on a cluster of its own
(``tests/support/clusters.py``) and leaves the session's shared one alone:
its fixtures ``test_cluster``, ``settings``, ``services``, ``relay`` and
``client`` replace conftest's for this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.accounts.tokens import hash_token
from gridlink.app import create_app
from gridlink.cache import TOKEN_CACHE_SECONDS
from gridlink.cache.stream import ChangeRelay
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from tests.support.abuse import an_address, app_with
from tests.support.accounts import attempt
from tests.support.api import assert_error, login, me_status, random_username, sign_up, signup_body
from tests.support.clusters import cluster_layout, running, settings_for
from tests.support.faults import stopped
from tests.support.queries import count_queries
from tests.support.relay import relay_running


@pytest.fixture(scope="module")
def test_cluster() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("accounts-faults")) as layout:
        yield layout


@pytest.fixture(scope="module")
def settings(test_cluster: cluster.ClusterLayout, mail_dir: Path) -> Settings:
    return settings_for(test_cluster, mail_dir)


@pytest.fixture(scope="module")
def services(settings: Settings) -> Iterator[Services]:
    with Services.connected(settings) as connected:
        yield connected


@pytest.fixture(scope="module")
def relay(settings: Settings, services: Services) -> Iterator[ChangeRelay]:
    with relay_running(settings) as running_relay:
        yield running_relay


@pytest.fixture(scope="module")
def client(settings: Settings, services: Services, relay: ChangeRelay) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, services))


def replicas_have_token(services: Services, token: str) -> bool:
    for replica in services.replicas:
        with replica.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM auth_tokens WHERE token_hash = :h"), {"h": hash_token(token)}
            ).one_or_none()
        if found is None:
            return False
    return True


def replicas_streaming(layout: cluster.ClusterLayout) -> bool:
    replicas = [s for s in cluster.status(layout) if s.role == "replica"]
    return all(s.state == "streaming" for s in replicas)


# --- Redis down --------------------------------------------------------------------------------


def test_with_redis_down_every_accounts_endpoint_goes_on_working(client, test_cluster):
    user = sign_up(client)
    with stopped(test_cluster, "redis"):
        signed_up = client.simulate_post("/api/auth/signup/", json=signup_body())
        assert signed_up.status_code == 201, signed_up.text
        assert me_status(client, signed_up.json["token"]) == 200
        # The limits are kept in the process without Redis: no way in, no open door, no 5xx.
        address = an_address()
        for _ in range(5):
            wrong = attempt(client, user.username, "wrong password", address)
            assert_error(wrong, 401, "unauthenticated")
        assert_error(attempt(client, user.username, user.password, address), 429, "rate_limited")
        logged_in = login(client, signed_up.json["user"]["username"], "correct horse")
        assert logged_in.status_code == 200, logged_in.text
        assert me_status(client, user.token) == 200
        patched = client.simulate_patch(
            "/api/users/me/", headers=user.headers, json={"display_name": "offline"}
        )
        assert patched.status_code == 200, patched.text
        reset = client.simulate_post("/api/auth/password/reset/", json={"email": user.email})
        assert reset.status_code == 202
        assert client.simulate_post("/api/auth/logout/", headers=user.headers).status_code == 204
        assert me_status(client, user.token) == 401
        assert me_status(client, logged_in.json["token"]) == 200
    assert me_status(client, user.token) == 401
    assert me_status(client, logged_in.json["token"]) == 200


def test_a_redis_back_with_old_data_never_vouches_for_a_revoked_token(
    client, services, test_cluster
):
    user = sign_up(client)
    assert me_status(client, user.token) == 200  # cached as valid
    old_entry = services.token_cache.key(hash_token(user.token))
    # Redis saves its data and stops; the logout happens while it is away.
    services.redis.shutdown(save=True)
    try:
        assert client.simulate_post("/api/auth/logout/", headers=user.headers).status_code == 204
        assert me_status(client, user.token) == 401
    finally:
        cluster.start_server(test_cluster, "redis")
    assert services.redis.exists(old_entry)  # it came back with the entry that says "valid"
    assert me_status(client, user.token) == 401


def test_a_revocation_redis_did_not_hear_of_is_noticed_within_a_minute(client, services, user):
    key = services.token_cache.key(hash_token(user.token))
    stale_entry, stale_ms = services.redis.get(key), services.redis.pttl(key)
    assert 0 < stale_ms <= TOKEN_CACHE_SECONDS * 1000
    assert client.simulate_post("/api/auth/logout/", headers=user.headers).status_code == 204
    # As if Redis had been unreachable for the tombstone, then answered again.
    services.redis.set(key, stale_entry, px=stale_ms)
    services.redis.delete(key)  # what the entry's expiry does, within stale_ms
    assert me_status(client, user.token) == 401


# --- the primary down --------------------------------------------------------------------------


def test_with_the_primary_down_tokens_still_authenticate_reads_and_writes_answer_503(
    client, services, test_cluster
):
    user = sign_up(client)
    assert services.replicas, "the test cluster has a replica"
    assert cluster.wait_until(lambda: replicas_have_token(services, user.token), 15)
    with stopped(test_cluster, "primary"):
        me = client.simulate_get("/api/users/me/", headers=user.headers)
        assert me.status_code == 200, me.text
        assert me.headers["X-Gridlink-Read-Source"] == "replica"
        assert me.json["username"] == user.username
        # A token check that misses the cache is answered by a replica.
        services.redis.delete(services.token_cache.key(hash_token(user.token)))
        with count_queries(*services.replicas) as on_replicas:
            assert services.token_cache.authenticate(user.token).username == user.username
        assert on_replicas.count == 1
        for result in (
            client.simulate_post("/api/auth/logout/", headers=user.headers),
            client.simulate_post("/api/auth/signup/", json=signup_body()),
            login(client, user.username, user.password),
            client.simulate_patch("/api/users/me/", headers=user.headers, json={}),
        ):
            assert_error(result, 503, "unavailable")
            assert int(result.headers["Retry-After"]) >= 1
        assert me_status(client, "never-issued-" + random_username()) == 401
    assert cluster.wait_until(lambda: replicas_streaming(test_cluster), 30)
    assert me_status(client, user.token) == 200  # the failed logout revoked nothing


def test_logins_answered_503_while_the_primary_is_down_do_not_count_against_the_address(
    services, test_cluster
):
    client = app_with(services, login_failures_per_address=3)
    user = sign_up(client)
    address = an_address()

    def log_in() -> int:
        return client.simulate_post(
            "/api/auth/login/",
            json={"username": user.username, "password": user.password},
            remote_addr=address,
        ).status_code

    with stopped(test_cluster, "primary"):
        # More than the address may fail: an outage is not the client's failure.
        assert [log_in() for _ in range(5)] == [503] * 5
    assert cluster.wait_until(lambda: replicas_streaming(test_cluster), 30)
    assert log_in() == 200
