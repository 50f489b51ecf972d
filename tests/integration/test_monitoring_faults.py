"""What operators see when a replica really falls behind or goes away.

A replica's replay is paused (``pg_wal_replay_pause()``) or the replica is
stopped, so the module runs a cluster of its own (two replicas) on the ports
GRIDLINK_TEST_PORT_BASE + 120 and up. The lag bound is 1 s, so a paused
replica leaves rotation in a couple of seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import Engine, create_engine, text

from gridlink.app import create_app
from gridlink.cli import main
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from tests.support.api import ApiUser
from tests.support.clusters import cluster_layout, running
from tests.support.faults import replay_paused, writes_flowing
from tests.support.metrics import make_admin, scrape, value
from tests.support.servers import use_settings_environment
from tests.support.waiting import wait_for

LAYOUT = cluster_layout("monitoring-cluster", replicas=2)
MAX_LAG_SECONDS = 1.0
# Leaving rotation takes 2 s past the bound (API.md promise 5); the rest is slack.
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def faulty_settings() -> Iterator[Settings]:
    with running(LAYOUT) as layout:
        yield Settings(
            database_url=layout.database_url,
            replica_urls=layout.replica_urls,
            redis_url=layout.redis_url,
            max_replica_lag_seconds=MAX_LAG_SECONDS,
        )


@pytest.fixture(scope="module")
def faulty_services(faulty_settings: Settings) -> Iterator[Services]:
    with closing(Services.connect(faulty_settings)) as services:
        yield services


@pytest.fixture(scope="module")
def faulty_client(
    faulty_settings: Settings, faulty_services: Services
) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(faulty_settings, faulty_services))


@pytest.fixture(scope="module")
def admin(faulty_client: falcon.testing.TestClient, faulty_services: Services) -> ApiUser:
    return make_admin(faulty_client, faulty_services)


@pytest.fixture(scope="module")
def primary(faulty_settings: Settings) -> Iterator[Engine]:
    engine = create_engine(faulty_settings.database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(
            text("CREATE TABLE IF NOT EXISTS probe_rows (id bigserial PRIMARY KEY, note text)")
        )
    yield engine
    engine.dispose()


def replicas_view(client: falcon.testing.TestClient, admin: ApiUser) -> dict[str, Any]:
    answer = client.simulate_get("/api/admin/replicas/", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return {replica["name"]: replica for replica in answer.json["replicas"]}


def wait_for_view(
    client: falcon.testing.TestClient, admin: ApiUser, name: str, **expected: object
) -> dict[str, Any]:
    """Poll the endpoint until replica ``name`` shows ``expected``; return the whole view."""
    seen: dict[str, Any] = {}

    def shows_it() -> bool:
        seen.update(replicas_view(client, admin))
        return all(seen[name][key] == wanted for key, wanted in expected.items())

    wait_for(shows_it, TIMEOUT, f"{name} shows {expected}")
    return seen


@contextmanager
def stopped(name: str) -> Iterator[None]:
    cluster.stop_server(LAYOUT, name)
    try:
        yield
    finally:
        cluster.start_server(LAYOUT, name)


def test_a_replica_whose_replay_is_paused_shows_its_lag_and_leaves_rotation(
    faulty_client, faulty_settings, admin, primary, monkeypatch, capsys
):
    wait_for_view(faulty_client, admin, "replica1", in_rotation=True)
    with writes_flowing(primary), replay_paused(LAYOUT):
        view = wait_for_view(faulty_client, admin, "replica1", in_rotation=False)
        paused, healthy = view["replica1"], view["replica2"]
        assert paused["reachable"] is True
        assert paused["lag_seconds"] > MAX_LAG_SECONDS
        assert paused["lag_bytes"] > 0
        assert (healthy["in_rotation"], healthy["reachable"]) == (True, True)

        samples = scrape(faulty_client, admin)
        labels = {"replica": "replica1", "host": paused["host"]}
        assert value(samples, "gridlink_replica_in_rotation", **labels) == 0
        assert value(samples, "gridlink_replica_lag_seconds", **labels) > MAX_LAG_SECONDS
        assert value(samples, "gridlink_replica_lag_bytes", **labels) > 0
        assert value(samples, "gridlink_replicas_in_rotation") == 1

        use_settings_environment(monkeypatch, faulty_settings)
        assert main(["replicas"]) == 0
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
        assert rows["replica1"][2:4] == ["yes", "no"]  # reachable, out of rotation
        assert float(rows["replica1"][4]) > MAX_LAG_SECONDS
        assert rows["replica2"][2:4] == ["yes", "yes"]
    with writes_flowing(primary):
        wait_for_view(faulty_client, admin, "replica1", in_rotation=True)


def test_a_stopped_replica_shows_unreachable_with_no_lag_and_comes_back(
    faulty_client, admin, primary
):
    wait_for_view(faulty_client, admin, "replica2", in_rotation=True)
    with stopped("replica2"):
        view = wait_for_view(faulty_client, admin, "replica2", reachable=False)
        assert view["replica2"] == {
            "name": "replica2",
            "host": f"127.0.0.1:{LAYOUT.replica_port(2)}",
            "reachable": False,
            "in_rotation": False,
            "lag_bytes": None,
            "lag_seconds": None,
            "replay_lsn": None,
        }
        assert view["replica1"]["in_rotation"] is True

        samples = scrape(faulty_client, admin)
        labels = {"replica": "replica2", "host": view["replica2"]["host"]}
        assert value(samples, "gridlink_replica_reachable", **labels) == 0
        assert ("gridlink_replica_lag_seconds", frozenset(labels.items())) not in samples
    with writes_flowing(primary):
        wait_for_view(faulty_client, admin, "replica2", reachable=True, in_rotation=True)
