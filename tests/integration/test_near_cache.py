"""A hot profile costs Redis nothing: each process's memory, invalidated by Redis.

An anonymous read answered from memory sends no Redis command and carries the
same answer as one from Redis. Memory answers only while its invalidation
connection is provably current: not once the connection is cut, not past the
bound when Redis stops answering, never with what changed while it was cut
off, and never to a reader with a token (who may have just written).

These tests kill connections and freeze Redis, so they run on a cluster of
their own (``GRIDLINK_TEST_PORT_BASE`` + 240).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import falcon.testing
import pytest
import redis

from gridlink.app import create_app
from gridlink.cache import TIMEOUT_COOL_OFF_SECONDS, CachedProfile, ProfileCache
from gridlink.cache.near import ADMISSION_KEYS, CURRENT_SECONDS, NearCache
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from tests.support.api import ApiUser, sign_up
from tests.support.clusters import cluster_layout, running, settings_for
from tests.support.faults import redis_frozen
from tests.support.profile_reads import (
    SOURCE,
    anonymous_read,
    create_grid,
    etag_version,
    rename_grid,
)
from tests.support.queries import count_redis_round_trips
from tests.support.relay import relay_running, wait_for_stream
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def layout() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("near-cache")) as built:
        yield built


@pytest.fixture(scope="module")
def settings(layout: cluster.ClusterLayout, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(layout, tmp_path_factory.mktemp("near-cache-mail"))


@pytest.fixture(scope="module")
def services(settings: Settings) -> Iterator[Services]:
    with Services.connected(settings) as connected, relay_running(settings):
        yield connected


@pytest.fixture(scope="module")
def client(services: Services) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services.settings, services))


@pytest.fixture(scope="module")
def elsewhere(settings: Settings) -> Iterator[falcon.testing.TestClient]:
    """Another server process, as far as the cache goes: its own services and memory."""
    with Services.connected(settings) as other:
        yield falcon.testing.TestClient(create_app(settings, other))


def near(services: Services) -> NearCache:
    assert services.cache.near is not None, "the near cache is on by default"
    return services.cache.near


def in_memory(client: falcon.testing.TestClient, services: Services, username: str) -> bool:
    """Read ``username`` anonymously; tell whether the answer cost no Redis command."""
    with count_redis_round_trips() as sent:
        anonymous_read(client, username)
    return not sent


def held_in_memory(client: falcon.testing.TestClient, services: Services, username: str) -> None:
    """Read until this process answers ``username`` from memory."""
    wait_for(near(services).current, 15, "the invalidation connection is current")
    wait_for(lambda: in_memory(client, services, username), 15, "the profile is kept in memory")


def profile_in_memory(
    client: falcon.testing.TestClient, services: Services, name: str
) -> tuple[ApiUser, str, str]:
    """Sign up ``name`` with one grid, "Before", held in memory: the user, the slug, the path."""
    user = sign_up(client, name)
    slug = create_grid(client, user, "Before")["slug"]
    held_in_memory(client, services, user.username)
    return user, slug, f"/api/users/{user.username}/"


def comparable(result: falcon.testing.Result) -> tuple[int, dict[str, str], bytes]:
    headers = {name.lower(): value for name, value in result.headers.items()}
    headers.pop("x-request-id")
    return result.status_code, headers, result.content


def titles(result: falcon.testing.Result) -> list[str]:
    return [grid["title"] for grid in result.json["grids"]]


def test_a_profile_read_from_memory_sends_redis_nothing_and_is_the_same_answer(
    client: falcon.testing.TestClient, services: Services
) -> None:
    user = sign_up(client, "hot")
    create_grid(client, user, "Hot")
    path = f"/api/users/{user.username}/"
    wait_for(near(services).current, 15, "the invalidation connection is current")
    for _ in range(2):  # kept at its second read from Redis
        with count_redis_round_trips() as sent:
            from_redis = client.simulate_get(path)
        assert any("HMGET" in command for command in sent), sent
    for _ in range(3):
        with count_redis_round_trips() as sent:
            from_memory = client.simulate_get(path)
        assert sent == []
        assert comparable(from_memory) == comparable(from_redis)
        assert from_memory.headers[SOURCE] == "cache"
    with count_redis_round_trips() as sent:
        unchanged = client.simulate_get(path, headers={"If-None-Match": from_redis.headers["ETag"]})
    assert sent == []
    assert unchanged.status_code == 304


def test_memory_keeps_a_profile_at_its_second_read_among_the_last_profiles_read(
    services: Services,
) -> None:
    memory = near(services)
    wait_for(memory.current, 15, "the invalidation connection is current")
    prefix = services.cache.profile_key("")

    def read_from_redis(name: str) -> bool:
        """Tell memory of an anonymous read of ``name`` from Redis, as ``get_profile``
        does; tell whether it kept what was read."""
        began = memory.generation
        memory.note(prefix + name, CachedProfile(1, b"{}"), keep_from=began)
        # Memory answers only while current: a late PING must not pass for a refused keep.
        wait_for(memory.current, 15, "the invalidation connection is current")
        return memory.get(prefix + name) is not None

    assert not read_from_redis("admitted")
    assert read_from_redis("admitted")
    assert not read_from_redis("forgotten")
    # Read once among 2 x ADMISSION_KEYS other profiles read once: remembered no longer.
    assert not any(read_from_redis(f"once_{number}") for number in range(2 * ADMISSION_KEYS))
    assert not read_from_redis("forgotten")
    assert read_from_redis("forgotten")


def test_a_reader_with_a_token_is_never_answered_from_memory(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
) -> None:
    user, slug, path = profile_in_memory(client, services, "own")
    with count_redis_round_trips() as sent:
        client.simulate_get(path, headers=user.headers)
    assert any("HMGET" in command for command in sent), sent  # memory held it: not for them
    # The user writes through another process; this one hears of it only a moment later.
    rename_grid(elsewhere, user, slug, "After")
    own = client.simulate_get(path, headers=user.headers)
    assert [grid["title"] for grid in own.json["grids"]] == ["After"]


@contextmanager
def invalidations_held(cache: NearCache) -> Iterator[None]:
    """Keep the invalidation thread off its socket, with memory as current as it was.

    The interleaving a busy process allows: Redis has sent an invalidation, the
    thread has not taken it yet, and the last PING's answer is a moment old
    (the cache's clock is stopped at it).
    """
    paused, resume = threading.Event(), threading.Event()
    read, clock = cache._read, cache._clock

    def held(connection: Any, timeout: float) -> bool | None:
        paused.set()
        resume.wait()
        return read(connection, timeout)

    cache._read = held  # type: ignore[method-assign]
    try:
        wait_for(paused.is_set, 15, "the invalidation thread waits")
        answered = cache.answered_since
        cache._clock = lambda: answered
        assert cache.current()
        yield
    finally:
        cache._clock = clock
        cache._read = read  # type: ignore[method-assign]
        resume.set()


@contextmanager
def changed_unheard(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
    name: str,
) -> Iterator[ApiUser]:
    """A profile held in memory, then renamed "After" by another process.

    Its invalidation waits on this process's socket for the block.
    """
    user, slug, _ = profile_in_memory(client, services, name)
    with invalidations_held(near(services)):
        rename_grid(elsewhere, user, slug, "After")
        yield user


def test_after_a_newer_version_from_redis_memory_never_answers_an_older_one(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
) -> None:
    with changed_unheard(client, elsewhere, services, "newer") as user:
        # A reader with a token reads Redis, so this process has served the new version...
        own = client.simulate_get(f"/api/users/{user.username}/", headers=user.headers)
        assert titles(own) == ["After"]
        # ... and no anonymous reader of it gets the old one from memory afterwards.
        assert titles(anonymous_read(client, user.username)) == ["After"]
    wait_for(lambda: in_memory(client, services, user.username), 15, "memory answers again")
    assert titles(anonymous_read(client, user.username)) == ["After"]


def test_a_read_begun_before_a_change_keeps_nothing_older_than_what_was_since_served(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
) -> None:
    user = sign_up(client, "overtaken")
    slug = create_grid(client, user, "Before")["slug"]
    cache, memory = services.cache, near(services)
    key = cache.profile_key(user.username)
    wait_for(memory.current, 15, "the invalidation connection is current")
    anonymous_read(client, user.username)  # read once: the keep below is its second read
    with invalidations_held(memory):
        # An anonymous reader's read of Redis, begun before the change; it keeps
        # what it read only once the others below have run.
        began = memory.generation
        overtaken = cache.get_profile(user.username)
        assert overtaken is not None
        # Another process changes the profile: the invalidation waits on this one's socket.
        rename_grid(elsewhere, user, slug, "After")
        # A reader with a token reads Redis: this process has served the new version.
        own = client.simulate_get(f"/api/users/{user.username}/", headers=user.headers)
        assert titles(own) == ["After"]
        # The first reader now keeps what it read, as its get_profile would at the end ...
        memory.note(key, overtaken, keep_from=began)
        # ... and memory has not taken it: no anonymous reader gets the old version.
        anonymous = anonymous_read(client, user.username)
        assert titles(anonymous) == ["After"]
        assert etag_version(anonymous) > overtaken.version


def test_an_entry_a_turn_at_a_miss_hands_back_is_served_as_a_hit_is(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
) -> None:
    with changed_unheard(client, elsewhere, services, "handed") as user:
        # A reader whose miss another's fill overtook: its turn hands it the entry.
        with services.cache.fill(user.username) as turn:
            handed = turn.filled_by_another
        assert handed is not None
        assert b"After" in handed.document
        assert titles(anonymous_read(client, user.username)) == ["After"]


def test_after_serving_a_fill_memory_never_answers_an_older_version(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
) -> None:
    with changed_unheard(client, elsewhere, services, "filled") as user:
        wait_for_stream(services)  # the relay has stored it too, and will not again
        services.cache.client.delete(services.cache.profile_key(user.username))  # evicted
        # A reader with a token misses Redis and fills from the database.
        own = client.simulate_get(f"/api/users/{user.username}/", headers=user.headers)
        assert own.headers[SOURCE] != "cache"
        assert titles(own) == ["After"]
        assert titles(anonymous_read(client, user.username)) == ["After"]


def kill_invalidation_connection(services: Services) -> None:
    client_id = near(services).client_id
    assert client_id is not None
    services.cache.client.client_kill_filter(_id=str(client_id))


def test_a_process_whose_invalidation_connection_is_cut_stops_answering_from_memory(
    client: falcon.testing.TestClient, services: Services
) -> None:
    user = sign_up(client, "cut")
    held_in_memory(client, services, user.username)
    cache = near(services)
    kill_invalidation_connection(services)
    # No PING is answered on a dead connection: memory answers for at most the
    # bound after the kill, by the cache's own clock, however late its thread runs.
    killed_at = cache._clock()
    late_answers_from_memory = []
    while True:
        started = cache._clock()
        if not in_memory(client, services, user.username):
            break
        if started - killed_at >= CURRENT_SECONDS:
            late_answers_from_memory.append(started - killed_at)
        assert started - killed_at < 15, "memory never stopped answering"
    assert late_answers_from_memory == []
    wait_for(near(services).current, 15, "a new invalidation connection")
    assert near(services).client_id is not None


@pytest.fixture
def reconnects_held(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> Iterator[threading.Event]:
    """Hold the near cache's next connection until the event is set (then let it connect)."""
    release = threading.Event()
    cache = near(services)
    connect: Callable[[], Any] = cache._connect

    def held() -> Any:
        release.wait()
        return connect()

    monkeypatch.setattr(cache, "_connect", held)
    try:
        yield release
    finally:
        release.set()


def test_a_profile_changed_while_the_process_was_cut_off_is_never_served_from_memory(
    client: falcon.testing.TestClient,
    elsewhere: falcon.testing.TestClient,
    services: Services,
    reconnects_held: threading.Event,
) -> None:
    user = sign_up(client, "missed")
    slug = create_grid(client, user, "Before")["slug"]
    held_in_memory(client, services, user.username)
    before = etag_version(anonymous_read(client, user.username))
    kill_invalidation_connection(services)
    wait_for(lambda: near(services).client_id is None, 15, "the cut is noticed")
    # Changed while nothing could tell this process: its invalidation is lost to it.
    rename_grid(elsewhere, user, slug, "After")
    reconnects_held.set()
    wait_for(near(services).current, 15, "a new invalidation connection")
    versions = [etag_version(anonymous_read(client, user.username)) for _ in range(3)]
    assert versions[0] > before
    assert versions == [versions[0]] * 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def assert_silent(settings: Settings) -> None:
    """Check that Redis answers nothing now: a PING sent from here on is never answered."""
    silent = redis.Redis.from_url(settings.redis_url, socket_timeout=0.2)
    try:
        with pytest.raises(redis.TimeoutError):
            silent.ping()
    finally:
        silent.close()


def test_with_redis_silent_memory_answers_no_longer_than_the_bound(
    layout: cluster.ClusterLayout, settings: Settings, client: falcon.testing.TestClient
) -> None:
    user: ApiUser = sign_up(client, "silent")
    clock = FakeClock()
    cache = ProfileCache(
        settings.redis_url, write_mark_ttl=10, clock=clock, near_cache_bytes=1_000_000
    )
    try:
        assert cache.near is not None
        wait_for(cache.near.current, 15, "the invalidation connection is current")
        wait_for(
            lambda: (
                cache.get_profile(user.username, remember=True) is not None
                and cache.recall(user.username) is not None
            ),
            15,
            "the profile is kept in memory",
        )
        # Every PING the thread sent so far was sent at this moment, as the clock goes.
        last_answered = clock.now
        with redis_frozen(layout):
            # Redis answers nothing now, PINGs included: memory is current until
            # the bound has passed since the last answered PING was sent.
            assert_silent(settings)
            clock.now = last_answered + CURRENT_SECONDS / 2
            assert cache.recall(user.username) is not None
            clock.now = last_answered + CURRENT_SECONDS
            assert cache.recall(user.username) is None
    finally:
        cache.close()


def test_memory_does_not_answer_while_redis_cools_off_after_a_timeout(
    layout: cluster.ClusterLayout, settings: Settings, client: falcon.testing.TestClient
) -> None:
    # A write whose write-through timed out is missing from Redis until the change
    # stream brings it: meanwhile this process reads the database, memory included.
    user = sign_up(client, "cooling")
    clock = FakeClock()
    cache = ProfileCache(
        settings.redis_url, write_mark_ttl=10, clock=clock, near_cache_bytes=1_000_000
    )
    try:
        near = cache.near
        assert near is not None
        wait_for(near.current, 15, "the invalidation connection is current")
        wait_for(
            lambda: (
                cache.get_profile(user.username, remember=True) is not None
                and cache.recall(user.username) is not None
            ),
            15,
            "the profile is kept in memory",
        )
        with redis_frozen(layout):
            assert_silent(settings)
            assert cache.get_profile(user.username) is None  # timed out: the cool-off begins
        clock.now += TIMEOUT_COOL_OFF_SECONDS / 2
        wait_for(lambda: near.answered_since == clock.now, 15, "a PING sent since is answered")
        assert cache.recall(user.username) is None
        clock.now += TIMEOUT_COOL_OFF_SECONDS / 2
        wait_for(lambda: cache.recall(user.username) is not None, 15, "memory answers again")
    finally:
        cache.close()
