"""Writing and reading profiles through the in-process app, for the read-side tests."""

from __future__ import annotations

import time
from typing import Any

import falcon.testing

from gridlink.cache import ProfileCache
from gridlink.services import Services
from tests.support.api import ApiUser

SOURCE = "X-Gridlink-Read-Source"


def bound(services: Services) -> float:
    """API.md promise 4: no profile older than the newest write past the lag bound + 2 s."""
    return services.settings.max_replica_lag_seconds + 2


def create_grid(client: falcon.testing.TestClient, user: ApiUser, title: str) -> dict[str, Any]:
    result = client.simulate_post("/api/grids/", json={"title": title}, headers=user.headers)
    assert result.status_code == 201, result.text
    return dict(result.json)


def rename_grid(client: falcon.testing.TestClient, user: ApiUser, slug: str, title: str) -> None:
    result = client.simulate_patch(
        f"/api/grids/{slug}/", json={"title": title}, headers=user.headers
    )
    assert result.status_code == 200, result.text


def etag_version(result: falcon.testing.Result) -> int:
    return int(result.headers["ETag"].strip('"').removeprefix("W/").strip('"'))


def anonymous_read(client: falcon.testing.TestClient, username: str) -> falcon.testing.Result:
    result = client.simulate_get(f"/api/users/{username}/")
    assert result.status_code == 200, result.text
    return result


def read_version(client: falcon.testing.TestClient, username: str) -> int:
    return etag_version(anonymous_read(client, username))


def assert_newest_within(
    client: falcon.testing.TestClient, username: str, newest: int, within: float
) -> None:
    """Poll until a read shows ``newest`` (at most ``within`` s); then it must stay newest."""
    deadline = time.monotonic() + within
    seen: list[int] = []
    while not seen or seen[-1] != newest:
        assert time.monotonic() < deadline, f"still not the newest version {newest}: {seen[-5:]}"
        seen.append(read_version(client, username))
        time.sleep(0.05)
    after = [read_version(client, username) for _ in range(20)]
    assert after == [newest] * 20, after


# A test that changes Redis behind the app's back, as an eviction or a lost
# Redis would, tells this process's memory at once: its invalidation thread
# hears of it within API.md's 100 ms, and a read right after must not depend
# on how soon that thread runs.


def evict(cache: ProfileCache, username: str) -> None:
    """Drop the profile's entry from Redis, as an eviction would, and from memory."""
    key = cache.profile_key(username)
    cache.client.delete(key)
    if cache.near is not None:
        cache.near.discard(key)


def flush(cache: ProfileCache) -> None:
    """``FLUSHALL``, as a Redis that lost its data, and this process's memory with it."""
    cache.client.flushall()
    if cache.near is not None:
        cache.near.clear()
