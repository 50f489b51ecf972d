"""The change stream and fills that stay, against real servers.

Every way the cache can lose a write (a relay killed mid-batch, Redis frozen
while writes went on, a flush, an evicted key, the relay down for long) must
leave nothing older than the newest acknowledged write served past API.md's
bound (the lag bound + 2 s). And a read-mostly workload is answered from the
cache after one pass.

Fills stay under live writes: a read-mostly workload stays answered from the
cache while another user writes, and a fill that raced a change of its own
profile is refused its long life (leases, ``gridlink.cache.profiles``).

These tests stop servers and the relay, so they run on a cluster of their own
(``GRIDLINK_TEST_PORT_BASE`` + 160) with a relay each test controls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.app import create_app
from gridlink.cache import SHORT_FILL_TTL_SECONDS
from gridlink.cache.positions import decode_position
from gridlink.cache.stream import RELAY_LOCK_KEY
from gridlink.db.lsn import CURRENT_POSITION_SQL
from gridlink.ops.seed import SeedPlan, seed
from gridlink.queries.profiles import Profiles, StoredProfile
from gridlink.queries.reader import REPLICA, Reader, ReadSource
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster, redis_server
from infra.relay_supervisor import RELAY_COMMAND
from tests.support.api import ApiUser, sign_up
from tests.support.clusters import cluster_layout, running, settings_for
from tests.support.faults import cached_version, redis_frozen, replay_paused
from tests.support.metrics import make_admin, scrape, value
from tests.support.profile_reads import (
    SOURCE,
    anonymous_read,
    assert_newest_within,
    bound,
    create_grid,
    etag_version,
    evict,
    flush,
    rename_grid,
)
from tests.support.queries import count_queries
from tests.support.relay import applied_position, pending_changes, relay_running, wait_for_stream
from tests.support.servers import server_environment
from tests.support.waiting import wait_for, wait_for_replica


@pytest.fixture(scope="module")
def layout() -> Iterator[cluster.ClusterLayout]:
    with running(cluster_layout("change-stream")) as built:
        yield built


@pytest.fixture(scope="module")
def settings(layout: cluster.ClusterLayout, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(layout, tmp_path_factory.mktemp("change-stream-mail"))


@pytest.fixture(scope="module")
def services(settings: Settings) -> Iterator[Services]:
    with Services.connected(settings) as connected:
        yield connected


@pytest.fixture(scope="module")
def client(services: Services) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services.settings, services))


@pytest.fixture
def relay(settings: Settings) -> Iterator[None]:
    """A relay for the test (tests that stop or kill it run their own instead)."""
    with relay_running(settings):
        yield


# --- helpers ------------------------------------------------------------------------


def primary_version(services: Services, username: str) -> int:
    with services.primary.connect() as connection:
        version: int = connection.execute(
            text("SELECT version FROM profile_documents WHERE lower(username) = lower(:u)"),
            {"u": username},
        ).scalar_one()
    return version


def entry_ttl_ms(services: Services, username: str) -> int:
    ttl: int = services.cache.client.pttl(services.cache.profile_key(username))
    return ttl


def fill_from_replica(
    services: Services, client: falcon.testing.TestClient, username: str
) -> falcon.testing.Result:
    evict(services.cache, username)
    with count_queries(services.primary, *services.replicas) as counted:
        result = anonymous_read(client, username)
    assert result.headers[SOURCE] == "replica", result.headers[SOURCE]
    assert counted.count == 1, counted.statements
    return result


# --- fills that stay ----------------------------------------------------------------


def test_a_fill_from_a_caught_up_replica_stays_and_costs_one_query(
    services: Services, client: falcon.testing.TestClient, relay: None
) -> None:
    user = sign_up(client, "stay")
    wait_for_stream(services)
    wait_for_replica(services)
    fill_from_replica(services, client, user.username)
    assert entry_ttl_ms(services, user.username) > 60_000

    with count_queries(services.primary, *services.replicas) as hit:
        result = anonymous_read(client, user.username)
    assert result.headers[SOURCE] == "cache"
    assert hit.count == 0, hit.statements


def test_an_evicted_entry_refilled_from_a_replica_behind_the_stream_lives_one_second(
    layout: cluster.ClusterLayout,
    services: Services,
    client: falcon.testing.TestClient,
    relay: None,
) -> None:
    user = sign_up(client, "behind")
    slug = create_grid(client, user, "Old")["slug"]
    wait_for_stream(services)
    wait_for_replica(services)
    with replay_paused(layout):
        rename_grid(client, user, slug, "New")
        newest = primary_version(services, user.username)
        wait_for_stream(services)  # the relay applied the rename: the position is past replica1
        services.router.refresh()
        old = fill_from_replica(services, client, user.username)  # the DEL is the eviction
        assert etag_version(old) < newest
        assert 0 < entry_ttl_ms(services, user.username) <= SHORT_FILL_TTL_SECONDS * 1000
    assert_newest_within(client, user.username, newest, bound(services))


def test_with_the_relay_down_fills_from_replicas_are_short_and_long_again_once_it_is_back(
    services: Services, client: falcon.testing.TestClient, settings: Settings
) -> None:
    user = sign_up(client, "down")
    wait_for_replica(services)
    # No relay: the position expires within its few seconds, and with it the proof.
    wait_for(lambda: applied_position(services) is None, 15, "the applied position expires")
    fill_from_replica(services, client, user.username)
    assert 0 < entry_ttl_ms(services, user.username) <= SHORT_FILL_TTL_SECONDS * 1000
    # Operators see it (within the second a readiness answer may be old); reads are still served.
    wait_for(
        lambda: (
            client.simulate_get("/readyz")
            .json["checks"]["change_stream"]
            .startswith("no applied position in redis")
        ),
        5,
        "readiness to see the relay down",
    )
    assert client.simulate_get("/readyz").status_code == 200
    assert value(scrape(client, make_admin(client, services)), "gridlink_stream_up") == 0.0
    # However long the relay is away, the outbox keeps one row per user: the newest version.
    slug = create_grid(client, user, "One")["slug"]
    for title in ("Two", "Three", "Four"):
        rename_grid(client, user, slug, title)
    newest = primary_version(services, user.username)
    with services.primary.connect() as connection:
        rows = connection.execute(
            text("SELECT version FROM profile_changes WHERE username_key = lower(:u)"),
            {"u": user.username},
        ).all()
    assert [row.version for row in rows] == [newest]

    with relay_running(settings):
        wait_for_stream(services)
        assert cached_version(settings, user.username) == newest
        wait_for_replica(services)
        fill_from_replica(services, client, user.username)
        assert entry_ttl_ms(services, user.username) > 60_000


# --- promise 4: every way of losing a write ---------------------------------------


def test_writes_redis_missed_while_frozen_reach_it_through_the_stream(
    layout: cluster.ClusterLayout,
    services: Services,
    client: falcon.testing.TestClient,
    relay: None,
) -> None:
    users = [sign_up(client, "frozen") for _ in range(3)]
    slugs = [create_grid(client, user, "Before")["slug"] for user in users]
    for user in users:
        anonymous_read(client, user.username)  # cached, long-lived
    with redis_frozen(layout):
        for user, slug in zip(users, slugs, strict=True):
            rename_grid(client, user, slug, "During")  # the write-through times out
    # No process keeps the missed write-throughs any more: only the stream brings them.
    for user in users:
        assert_newest_within(
            client, user.username, primary_version(services, user.username), bound(services)
        )


def start_relay_process(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *RELAY_COMMAND[1:]], env=server_environment(settings))


def relay_holds_the_stream(services: Services) -> bool:
    with services.primary.connect() as connection:
        held: int = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = :high AND objid::bigint = :low"
            ),
            {"high": RELAY_LOCK_KEY >> 32, "low": RELAY_LOCK_KEY & 0xFFFFFFFF},
        ).scalar_one()
    return held > 0


def relay_is_past_reading_a_batch(services: Services) -> bool:
    """Tell whether the relay's last statement read the position that follows a batch's read.

    Its next step is Redis: frozen, it waits there (and retries the batch).
    """
    with services.primary.connect() as connection:
        last: list[str] = list(
            connection.execute(
                text(
                    "SELECT query FROM pg_stat_activity"
                    " WHERE application_name = 'gridlink-relay' AND state = 'idle'"
                )
            ).scalars()
        )
    return CURRENT_POSITION_SQL in last


@pytest.mark.parametrize("where", ["before its redis step", "after its redis step"])
def test_a_relay_killed_mid_batch_loses_no_change(
    layout: cluster.ClusterLayout,
    services: Services,
    client: falcon.testing.TestClient,
    settings: Settings,
    where: str,
) -> None:
    users = [sign_up(client, "killed") for _ in range(3)]
    slugs = [create_grid(client, user, "Before")["slug"] for user in users]
    for user in users:
        anonymous_read(client, user.username)
    # Write while Redis is frozen: the write-throughs miss, only the stream has the changes.
    with redis_frozen(layout):
        for user, slug in zip(users, slugs, strict=True):
            rename_grid(client, user, slug, "After")
    assert pending_changes(services) >= len(users)

    relay = start_relay_process(settings)
    try:
        if where == "before its redis step":
            with redis_frozen(layout):
                wait_for(lambda: relay_holds_the_stream(services), 15, "the relay starts")
                wait_for(
                    lambda: relay_is_past_reading_a_batch(services),
                    15,
                    "the relay reads the batch and goes on to the frozen Redis",
                )
                relay.send_signal(signal.SIGKILL)
                relay.wait()
        else:
            with services.primary.connect() as holder:
                # Hold the outbox rows: the relay stores in Redis, then waits to delete them.
                holder.execute(text("SELECT 1 FROM profile_changes FOR UPDATE"))
                wait_for(
                    lambda: all(
                        cached_version(services.settings, user.username)
                        == primary_version(services, user.username)
                        for user in users
                    ),
                    15,
                    "the relay's redis step",
                )
                relay.send_signal(signal.SIGKILL)
                relay.wait()
                # Its host is gone with it: so is the session waiting to delete.
                holder.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'gridlink-relay'"
                    )
                )
                holder.rollback()
        assert pending_changes(services) >= len(users)  # nothing forgotten by the dead relay
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()

    with relay_running(settings):
        wait_for_stream(services)
        for user in users:
            assert_newest_within(
                client, user.username, primary_version(services, user.username), bound(services)
            )


@pytest.mark.parametrize("how", ["flushed", "restarted empty", "restarted with an old snapshot"])
def test_redis_losing_its_data_with_a_replica_behind_serves_nothing_stale_past_the_bound(
    layout: cluster.ClusterLayout,
    services: Services,
    client: falcon.testing.TestClient,
    relay: None,
    how: str,
) -> None:
    user = sign_up(client, "lost")
    slug = create_grid(client, user, "Old")["slug"]
    anonymous_read(client, user.username)
    wait_for_stream(services)
    wait_for_replica(services)
    with replay_paused(layout):
        if how == "restarted with an old snapshot":
            services.cache.client.save()
        rename_grid(client, user, slug, "New")
        newest = primary_version(services, user.username)
        if how == "flushed":
            flush(services.cache)
        else:
            cluster.stop_server(layout, "redis")
            if how == "restarted empty":
                (layout.root / "redis" / "dump.rdb").unlink(missing_ok=True)
            cluster.start_server(layout, "redis")
        services.router.refresh()
        reads = [anonymous_read(client, user.username) for _ in range(5)]
        # The replica is behind: its old version may be served, but only for a moment.
        assert {etag_version(read) for read in reads} <= {etag_version(reads[0]), newest}
    assert_newest_within(client, user.username, newest, bound(services))
    (layout.root / "redis" / "dump.rdb").unlink(missing_ok=True)


def test_real_evictions_under_allkeys_lru_leave_nothing_stale(
    services: Services, client: falcon.testing.TestClient, relay: None
) -> None:
    redis_config: Any = services.cache.client.config_get("maxmemory-policy")
    assert list(redis_config.values()) == ["allkeys-lru"], redis_config
    users = [sign_up(client, "lru") for _ in range(5)]
    slugs = [create_grid(client, user, "Old")["slug"] for user in users]
    evicted_before = int(services.cache.client.info("stats")["evicted_keys"])
    used = int(services.cache.client.info("memory")["used_memory"])
    services.cache.client.config_set("maxmemory", used + 2_000_000)
    try:
        filler = os.urandom(10_000)
        with services.cache.client.pipeline(transaction=False) as pipeline:
            for number in range(1000):
                pipeline.set(f"filler:{number}", filler)
            pipeline.execute()
        assert int(services.cache.client.info("stats")["evicted_keys"]) > evicted_before
        for user, slug in zip(users, slugs, strict=True):
            rename_grid(client, user, slug, "New")
        for user in users:
            assert_newest_within(
                client, user.username, primary_version(services, user.username), bound(services)
            )
    finally:
        services.cache.client.config_set("maxmemory", redis_server.REDIS_MAXMEMORY)


# --- a read-mostly workload is answered from the cache --------------------------------


def short_lived_entries(services: Services, usernames: list[str]) -> int:
    """Count the cached profiles of ``usernames`` that expire within a short fill's lifetime."""
    with services.cache.client.pipeline(transaction=False) as pipeline:
        for username in usernames:
            pipeline.pttl(services.cache.profile_key(username))
        ttls: list[int] = pipeline.execute()
    return sum(1 for ttl in ttls if 0 < ttl <= SHORT_FILL_TTL_SECONDS * 1000)


def test_after_two_passes_a_read_mostly_workload_is_answered_from_the_cache(
    services: Services, client: falcon.testing.TestClient, relay: None
) -> None:
    result = seed(services, SeedPlan(users=200, grids=2, links=2), progress=None)
    usernames = [result.username(number) for number in range(result.first, result.last + 1)]
    wait_for_replica(services)
    flush(services.cache)
    wait_for_stream(services)
    wait_for_replica(services)  # and the router has seen it there
    for _ in range(2):
        for username in usernames:
            anonymous_read(client, username)
    wait_for(
        lambda: short_lived_entries(services, usernames) == 0,
        SHORT_FILL_TTL_SECONDS + 15,
        "every short-lived fill expires",
    )
    sources = [anonymous_read(client, username).headers[SOURCE] for username in usernames]
    from_cache = sources.count("cache") / len(sources)
    assert from_cache >= 0.99, f"{sources.count('cache')} of {len(sources)} from the cache"


# --- fills stay under other users' writes; a fill that raced its own profile's change does not


@dataclass
class SteadyWriter:
    """Another user renaming a grid of theirs through the API, again and again, until stopped."""

    client: falcon.testing.TestClient
    user: ApiUser
    slug: str
    written: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopping.is_set():
            rename_grid(self.client, self.user, self.slug, f"Title {self.written}")
            self.written += 1
            self.stopping.wait(WRITE_PAUSE_SECONDS)

    def wait_for_another_write(self) -> None:
        """Return once a write that began after this call has been answered."""
        started = self.written
        wait_for(lambda: self.written > started + 1, 15, "the other user's next write")


# About 20 writes a second, as fast as a busy editor: the stream applies each one.
WRITE_PAUSE_SECONDS = 0.05
# The readers wait for one of those writes every so many reads, so writes land among the
# fills however slowly the writer's thread is scheduled on a busy machine.
READS_PER_WRITE = 50


@contextmanager
def another_user_writing(client: falcon.testing.TestClient) -> Iterator[SteadyWriter]:
    user = sign_up(client, "editor")
    writer = SteadyWriter(client, user, create_grid(client, user, "Draft")["slug"])
    thread = threading.Thread(target=writer.run, name="steady-writer")
    thread.start()
    try:
        wait_for(lambda: writer.written > 0, 15, "the other user's first write")
        yield writer
    finally:
        writer.stopping.set()
        thread.join()


def test_a_read_mostly_workload_stays_answered_from_the_cache_while_another_user_writes(
    services: Services, client: falcon.testing.TestClient, relay: None
) -> None:
    result = seed(services, SeedPlan(users=200, grids=2, links=2), progress=None)
    usernames = [result.username(number) for number in range(result.first, result.last + 1)]
    wait_for_stream(services)
    wait_for_replica(services)
    with another_user_writing(client) as writer:
        flush(services.cache)
        wait_for(lambda: applied_position(services) is not None, 15, "the relay's next position")
        applied_before = decode_position(applied_position(services))
        written_before = writer.written
        for _ in range(2):
            for number, username in enumerate(usernames):
                if number % READS_PER_WRITE == 0:
                    writer.wait_for_another_write()
                anonymous_read(client, username)
        wait_for(
            lambda: short_lived_entries(services, usernames) == 0,
            SHORT_FILL_TTL_SECONDS + 15,
            "every short-lived fill expires",
        )
        sources = [anonymous_read(client, username).headers[SOURCE] for username in usernames]
        applied_after = decode_position(applied_position(services))
        written = writer.written - written_before
    # The other user's writes were applied all along, moving the stream's position
    # past every replica's last probe: the position the old rule compared fills with.
    assert written >= 2 * len(usernames) // READS_PER_WRITE, written
    assert applied_before is not None
    assert applied_after is not None
    assert applied_after > applied_before
    from_cache = sources.count("cache") / len(sources)
    assert from_cache >= 0.99, f"{sources.count('cache')} of {len(sources)} from the cache"


T = TypeVar("T")


class ChangeBetweenReadAndStore(Reader):
    """A reader that runs ``between`` once its query has read, before the fill stores it."""

    def __init__(
        self, services: Services, between: Callable[[StoredProfile, ReadSource], None]
    ) -> None:
        super().__init__(services)
        self._between = between

    def read(self, reader: Any, query: Callable[..., T]) -> tuple[T, ReadSource]:
        result, source = super().read(reader, query)
        assert isinstance(result, StoredProfile)
        self._between(result, source)
        return result, source


def test_a_fill_that_raced_a_change_of_its_own_profile_is_not_kept(
    services: Services, client: falcon.testing.TestClient, relay: None
) -> None:
    user = sign_up(client, "raced")
    slug = create_grid(client, user, "Old")["slug"]
    wait_for_stream(services)
    wait_for_replica(services)
    evict(services.cache, user.username)
    read_versions: list[int] = []

    def change_the_profile(read: StoredProfile, source: ReadSource) -> None:
        # Without the change, this fill would be kept long: its replica had replayed its lease.
        raw: Any = services.cache.client.get(services.cache.lease_key(user.username))
        lease = decode_position(raw)
        assert source == REPLICA
        assert lease is not None
        assert read.replayed is not None
        assert read.replayed.proves(lease)
        read_versions.append(read.version)
        rename_grid(client, user, slug, "New")  # committed and written through
        wait_for_stream(services)  # and applied by the stream
        evict(services.cache, user.username)  # then evicted

    profiles = Profiles(services, ChangeBetweenReadAndStore(services, change_the_profile))
    stored, source = profiles.find(user.username, None)
    newest = primary_version(services, user.username)
    assert stored is not None
    assert source == REPLICA
    assert read_versions == [stored.version]
    assert stored.version < newest
    ttl = entry_ttl_ms(services, user.username)
    assert ttl == -2 or 0 < ttl <= SHORT_FILL_TTL_SECONDS * 1000, ttl
    assert_newest_within(client, user.username, newest, bound(services))
