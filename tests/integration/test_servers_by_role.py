"""The write engine follows the primary; a pooled connection to a demoted server is dropped.

Against the session cluster's real primary and replica: the write URL lists
both hosts, replica first, with ``target_session_attrs=read-write`` (the
staging setting), and the router names the primary by what each server
answers. A write engine whose server answers "read-only transaction"
(SQLSTATE 25006), as a demoted primary does, answers 503 with Retry-After and
throws its pooled connections away.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import event, text

from gridlink.app import create_app
from gridlink.db.urls import sqlalchemy_url
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from infra.processes import LOOPBACK
from tests.support.api import assert_error, signup_body


@pytest.fixture
def app_on(settings: Settings) -> Iterator[Any]:
    made: list[Services] = []

    def make(database_url: str) -> tuple[falcon.testing.TestClient, Services]:
        configured = replace(settings, database_url=database_url)
        services = Services.connect(configured)
        made.append(services)
        return falcon.testing.TestClient(create_app(configured, services)), services

    yield make
    for services in made:
        services.close()


def write_url(layout: cluster.ClusterLayout, *ports: int) -> str:
    """Return a write URL listing the loopback servers on ``ports``, as staging lists its hosts."""
    hosts = ",".join(f"{LOOPBACK}:{port}" for port in ports)
    return sqlalchemy_url(
        f"postgresql://{layout.user}@{hosts}/{layout.database}?target_session_attrs=read-write"
    )


def test_a_write_url_listing_every_host_writes_on_the_one_that_accepts_writes(
    test_cluster: cluster.ClusterLayout, app_on: Any
) -> None:
    replica, primary = test_cluster.replica_port(1), test_cluster.pg_port
    client, services = app_on(write_url(test_cluster, replica, primary))

    created = client.simulate_post("/api/auth/signup/", json=signup_body())
    snapshot = services.router.refresh()

    assert created.status_code == 201, created.text
    roles = {server.host: server.role for server in snapshot.servers}
    assert roles == {
        f"{LOOPBACK}:{replica}": "replica",
        f"{LOOPBACK}:{primary}": "primary",
    }
    assert snapshot.primary_host == f"{LOOPBACK}:{primary}"
    assert snapshot.in_rotation == ("replica1",)


def test_a_write_on_a_server_that_is_a_replica_now_answers_503_and_drops_the_pool(
    test_cluster: cluster.ClusterLayout, app_on: Any
) -> None:
    # The write engine reaches a server in recovery, as a pooled connection to
    # a demoted primary does after a failover.
    client, services = app_on(test_cluster.replica_urls[0])
    with services.primary.connect() as connection:
        before = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

    refused = client.simulate_post("/api/auth/signup/", json=signup_body())

    error = assert_error(refused, 503, "unavailable")
    assert refused.headers.get("Retry-After")
    assert "read-only" not in error["message"]
    with services.primary.connect() as connection:
        after = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert after != before  # the pooled connection was thrown away, not reused


def test_new_write_connections_try_the_primary_the_router_saw_first_and_unreachable_hosts_last(
    test_cluster: cluster.ClusterLayout, app_on: Any
) -> None:
    # Port 1 on loopback: nothing listens there, so the router finds it unreachable.
    replica, primary = test_cluster.replica_port(1), test_cluster.pg_port
    _client, services = app_on(write_url(test_cluster, 1, replica, primary))
    tried: list[str] = []

    @event.listens_for(services.primary, "do_connect")
    def record(_dialect: object, _record: object, _args: object, params: dict[str, Any]) -> None:
        tried.append(f"{params['host']} {params['port']}")

    services.router.refresh()
    services.primary.dispose()  # the next checkout connects afresh
    with services.primary.connect() as connection:
        port = connection.execute(text("SELECT inet_server_port()")).scalar_one()

    assert port == primary
    loopback = ",".join([LOOPBACK] * 3)
    assert tried == [f"{loopback} {primary},{replica},1"]
