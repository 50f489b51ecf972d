"""The read side against real servers: read your writes, the versioned cache, and faults.

These tests stop and slow down servers, so they run on a cluster of their own
(``GRIDLINK_TEST_PORT_BASE`` + 40), never on the shared session cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.app import create_app
from gridlink.db.lsn import Position
from gridlink.services import Services
from infra import cluster
from tests.support.api import ApiUser, sign_up
from tests.support.clusters import cluster_layout, running, settings_for
from tests.support.profile_reads import (
    SOURCE,
    assert_newest_within,
    bound,
    create_grid,
    etag_version,
    evict,
    flush,
    read_version,
    rename_grid,
)
from tests.support.queries import count_queries
from tests.support.relay import relay_running, wait_for_stream
from tests.support.waiting import wait_for, wait_for_replica, wait_for_setting


@pytest.fixture(scope="module")
def layout() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("read-side")) as built:
        yield built


@pytest.fixture(scope="module")
def services(
    layout: cluster.ClusterLayout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    settings = settings_for(layout, tmp_path_factory.mktemp("read-side-mail"))
    with Services.connected(settings) as connected, relay_running(settings):
        yield connected


@pytest.fixture(scope="module")
def client(services: Services) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services.settings, services))


@pytest.fixture
def user(client: falcon.testing.TestClient) -> ApiUser:
    return sign_up(client, "rs")


# --- helpers ------------------------------------------------------------------------


def grid_titles(result: falcon.testing.Result) -> list[str]:
    return [grid["title"] for grid in result.json["grids"]]


def replica_title(services: Services, slug: str) -> str:
    """Read a grid's title on replica1 itself, whatever the router thinks of it."""
    with services.replicas[0].connect() as connection:
        title: str = connection.execute(
            text("SELECT title FROM grids WHERE slug = :slug"), {"slug": slug}
        ).scalar_one()
    return title


def cached_version(services: Services, username: str) -> int:
    cached = services.cache.get_profile(username)
    assert cached is not None
    return cached.version


# --- read your writes -------------------------------------------------------------------


def test_read_your_writes_with_a_replica_three_seconds_behind(
    layout: cluster.ClusterLayout, services: Services, client: falcon.testing.TestClient
) -> None:
    user = sign_up(client, "ryw")
    wait_for_replica(services)
    try:
        cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "3s")
        wait_for_setting(layout.replica_urls[0], "recovery_min_apply_delay", "3s")
        services.router.refresh()
        grid = create_grid(client, user, "Fresh")
        slug = grid["slug"]

        result = client.simulate_get(f"/api/grids/{slug}/", headers=user.headers)
        assert result.status_code == 200, result.text
        assert result.json["title"] == "Fresh"
        assert result.headers[SOURCE] == "primary"

        result = client.simulate_get("/api/links/", params={"grid": slug}, headers=user.headers)
        assert result.status_code == 200, result.text
        assert result.headers[SOURCE] == "primary"

        # The replica really is behind: an anonymous read of it would not find the grid.
        with services.replicas[0].connect() as connection:
            on_replica: int = connection.execute(
                text("SELECT count(*) FROM grids WHERE slug = :slug"), {"slug": slug}
            ).scalar_one()
        assert on_replica == 0, "the replica was not lagging: the test proves nothing"

        rename_grid(client, user, slug, "Renamed")
        result = client.simulate_get(f"/api/users/{user.username}/", headers=user.headers)
        assert result.status_code == 200
        assert grid_titles(result) == ["Renamed"]
        assert result.headers[SOURCE] == "cache"
        result = client.simulate_get(f"/api/grids/{slug}/", headers=user.headers)
        assert result.status_code == 200
        assert result.json["title"] == "Renamed"
        assert result.headers[SOURCE] == "primary"
    finally:
        cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "0")
        wait_for_replica(services)


def test_anonymous_read_right_after_a_write_comes_from_the_cache(
    client: falcon.testing.TestClient, user: ApiUser
) -> None:
    before = client.simulate_get(f"/api/users/{user.username}/")
    assert before.status_code == 200
    grid = create_grid(client, user, "Seen at once")
    result = client.simulate_get(f"/api/users/{user.username}/")
    assert result.status_code == 200
    assert result.headers[SOURCE] == "cache"
    assert [g["slug"] for g in result.json["grids"]] == [grid["slug"]]
    assert etag_version(result) > etag_version(before)


# --- the versioned cache ---------------------------------------------------------------------


def test_a_stale_fill_never_replaces_a_newer_version(
    services: Services, client: falcon.testing.TestClient, user: ApiUser
) -> None:
    create_grid(client, user, "Newest")
    version = cached_version(services, user.username)
    current = client.simulate_get(f"/api/users/{user.username}/")

    services.cache.store_profile(
        user.username, version - 1, b'{"stale":true}', fill_position=Position(1, 0)
    )
    services.cache.store_profile(
        user.username, version, b'{"stale":true}', fill_position=Position(1, 0)
    )

    result = client.simulate_get(f"/api/users/{user.username}/")
    assert result.status_code == 200
    assert result.headers[SOURCE] == "cache"
    assert etag_version(result) == version
    assert result.content == current.content
    assert grid_titles(result) == ["Newest"]


def test_a_deleted_account_stays_deleted_despite_stale_stores(
    services: Services, client: falcon.testing.TestClient, user: ApiUser
) -> None:
    live = client.simulate_get(f"/api/users/{user.username}/")
    assert live.status_code == 200
    old_version = etag_version(live)

    result = client.simulate_delete(
        "/api/users/me/", json={"password": user.password}, headers=user.headers
    )
    assert result.status_code == 204, result.text
    assert client.simulate_get(f"/api/users/{user.username}/").status_code == 404

    services.cache.store_profile(
        user.username, old_version, live.content, fill_position=Position(1, 0)
    )
    services.cache.store_profile(user.username, old_version, live.content)
    result = client.simulate_get(f"/api/users/{user.username}/")
    assert result.status_code == 404
    assert result.headers[SOURCE] == "cache"


def test_a_cache_hit_costs_no_query_and_a_miss_one(
    services: Services, client: falcon.testing.TestClient, user: ApiUser
) -> None:
    path = f"/api/users/{user.username}/"
    engines = (services.primary, *services.replicas)
    client.simulate_get(path)  # warm pools and the cache

    with count_queries(*engines) as hit:
        result = client.simulate_get(path)
    assert result.status_code == 200
    assert result.headers[SOURCE] == "cache"
    assert hit.count == 0, hit.statements

    # An anonymous miss may read a replica: on a busy machine it can be a
    # second behind the sign-up, which API.md allows, so let it catch up.
    wait_for_replica(services)
    evict(services.cache, user.username)
    with count_queries(*engines) as miss:
        result = client.simulate_get(path)
    assert result.status_code == 200
    assert result.headers[SOURCE] in ("replica", "primary")
    assert miss.count == 1, miss.statements

    etag = result.headers["ETag"]
    with count_queries(*engines) as conditional:
        result = client.simulate_get(path, headers={"If-None-Match": etag})
    assert result.status_code == 304
    assert conditional.count == 0, conditional.statements


def test_concurrent_misses_fill_the_cache_once(
    services: Services, client: falcon.testing.TestClient, user: ApiUser
) -> None:
    path = f"/api/users/{user.username}/"
    client.simulate_get(path)
    # The fill must be one that stays (the relay holds a position the replica has
    # replayed): a 1 s fill could expire before a busy machine ran every waiter,
    # and a waiter that then finds neither lock nor entry fills again, rightly.
    wait_for_stream(services)
    wait_for_replica(services)  # as above: the misses may read the replica
    evict(services.cache, user.username)
    start = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def read() -> None:
        start.wait()
        status = client.simulate_get(path).status_code
        with lock:
            statuses.append(status)

    with count_queries(services.primary, *services.replicas) as counted:
        threads = [threading.Thread(target=read) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 20
    assert counted.count <= 2, counted.statements


# --- staleness is bounded through cache loss ----------------------------------------------------


def test_a_flush_right_after_a_write_never_serves_an_older_version_past_the_bound(
    services: Services, client: falcon.testing.TestClient, user: ApiUser
) -> None:
    grid = create_grid(client, user, "One")
    rename_grid(client, user, grid["slug"], "Two")
    newest = cached_version(services, user.username)
    flush(services.cache)
    assert_newest_within(client, user.username, newest, bound(services))


def test_a_flush_with_a_caught_up_replica_serves_only_the_newest_version(
    services: Services, client: falcon.testing.TestClient, user: ApiUser
) -> None:
    grid = create_grid(client, user, "One")
    rename_grid(client, user, grid["slug"], "Two")
    newest = cached_version(services, user.username)
    wait_for_replica(services)
    flush(services.cache)
    versions = [read_version(client, user.username) for _ in range(20)]
    assert versions == [newest] * 20, versions


# --- faults -------------------------------------------------------------------------------------


def test_redis_down_keeps_every_endpoint_working(
    layout: cluster.ClusterLayout, services: Services, client: falcon.testing.TestClient
) -> None:
    user = sign_up(client, "redis")
    slug = create_grid(client, user, "Before")["slug"]
    try:
        cluster.stop_server(layout, "redis")
        rename_grid(client, user, slug, "During")
        link = client.simulate_post(
            "/api/links/", json={"grid": slug, "url": "https://example.com/"}, headers=user.headers
        )
        assert link.status_code == 201, link.text

        for headers in ({}, user.headers):
            result = client.simulate_get(f"/api/users/{user.username}/", headers=headers)
            assert result.status_code == 200, result.text
            assert result.headers[SOURCE] in ("replica", "primary")
            result = client.simulate_get(f"/api/grids/{slug}/", headers=headers)
            assert result.status_code == 200, result.text
            result = client.simulate_get("/api/links/", params={"grid": slug}, headers=headers)
            assert result.status_code == 200, result.text
        # The writer reads from the primary while Redis cannot say where they wrote.
        result = client.simulate_get(f"/api/users/{user.username}/", headers=user.headers)
        assert grid_titles(result) == ["During"]
        assert result.headers[SOURCE] == "primary"
    finally:
        cluster.start_server(layout, "redis")
    wait_for_replica(services)


# Regression test: the first read after the restart used to compute the key with the
# old run_id and serve the RDB's stale document (fixed in cache.get_profile meanwhile).
def test_redis_back_with_its_old_data_never_serves_the_old_document(
    layout: cluster.ClusterLayout, services: Services, client: falcon.testing.TestClient
) -> None:
    user = sign_up(client, "rdb")
    slug = create_grid(client, user, "Before")["slug"]
    assert grid_titles(client.simulate_get(f"/api/users/{user.username}/")) == ["Before"]
    services.cache.client.save()
    try:
        cluster.stop_server(layout, "redis")
        rename_grid(client, user, slug, "During")
    finally:
        cluster.start_server(layout, "redis")
    wait_for_replica(services)

    reads: list[tuple[int, str, str]] = []
    for number in range(20):
        result = client.simulate_get(f"/api/users/{user.username}/")
        assert result.status_code == 200, result.text
        reads.append((number, grid_titles(result)[0], result.headers[SOURCE]))
    assert reads[-1][1] == "During", reads
    stale = [read for read in reads if read[1] != "During"]
    assert not stale, f"the old document from the RDB was served again: {stale}"


def test_read_your_writes_survives_a_redis_outage(
    layout: cluster.ClusterLayout, services: Services, client: falcon.testing.TestClient
) -> None:
    user = sign_up(client, "rywr")
    slug = create_grid(client, user, "Before")["slug"]
    wait_for_replica(services)
    try:
        cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "3s")
        wait_for_setting(layout.replica_urls[0], "recovery_min_apply_delay", "3s")
        services.router.refresh()
        try:
            cluster.stop_server(layout, "redis")
            rename_grid(client, user, slug, "During")
        finally:
            cluster.start_server(layout, "redis")
        services.router.refresh()
        for _ in range(3):
            result = client.simulate_get(f"/api/grids/{slug}/", headers=user.headers)
            assert result.status_code == 200, result.text
            assert result.json["title"] == "During", result.headers[SOURCE]
        # The replica was behind all along: a read of it would have shown the old title.
        assert replica_title(services, slug) == "Before", "the replica was not lagging"
    finally:
        cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "0")
        wait_for_replica(services)


def test_a_stopped_replica_costs_no_failed_read(
    layout: cluster.ClusterLayout, services: Services, client: falcon.testing.TestClient
) -> None:
    user = sign_up(client, "rep")
    slug = create_grid(client, user, "Kept")["slug"]
    wait_for_replica(services)
    sources: list[str] = []

    def read_both() -> None:
        evict(services.cache, user.username)
        for path in (f"/api/users/{user.username}/", f"/api/grids/{slug}/"):
            result = client.simulate_get(path)
            assert result.status_code == 200, (path, result.status_code, result.text)
            sources.append(result.headers[SOURCE])

    def read_and_probe() -> bool:
        read_both()
        return "replica1" not in services.router.refresh().in_rotation

    try:
        cluster.stop_server(layout, "replica1")
        # Reads go on while the router finds out, and after it has.
        wait_for(read_and_probe, 15, "the router takes replica1 out of rotation")
        read_both()
        assert sources[-2:] == ["primary", "primary"]
        assert "replica" not in sources
    finally:
        cluster.start_server(layout, "replica1")
        wait_for_replica(services, timeout=30)


def test_a_stopped_primary_refuses_writes_and_keeps_reads(
    layout: cluster.ClusterLayout, services: Services, client: falcon.testing.TestClient
) -> None:
    user = sign_up(client, "pri")
    slug = create_grid(client, user, "Readable")["slug"]
    wait_for_replica(services)
    client.simulate_get(f"/api/users/{user.username}/")
    try:
        cluster.stop_server(layout, "primary")
        services.router.refresh()

        result = client.simulate_post("/api/grids/", json={"title": "x"}, headers=user.headers)
        assert result.status_code == 503, result.text
        assert result.json["error"]["type"] == "unavailable"
        assert int(result.headers["Retry-After"]) >= 1

        result = client.simulate_get(f"/api/users/{user.username}/")
        assert result.status_code == 200, result.text
        assert grid_titles(result) == ["Readable"]
        for headers in ({}, user.headers):
            result = client.simulate_get(f"/api/grids/{slug}/", headers=headers)
            assert result.status_code == 200, (headers, result.status_code, result.text)
            assert result.json["title"] == "Readable"
            assert result.headers[SOURCE] in ("replica", "cache")
    finally:
        cluster.start_server(layout, "primary")

    def written() -> bool:
        result = client.simulate_post("/api/grids/", json={"title": "y"}, headers=user.headers)
        assert result.status_code in (201, 503), result.text
        return result.status_code == 201

    wait_for(written, 10, "a write succeeds once the primary is back")
    wait_for_replica(services, timeout=30)
