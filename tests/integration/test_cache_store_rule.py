"""The store rule and the leases as Redis runs them (Lua scripts), and the write-mark rule.

Each test uses a ProfileCache of its own on the session's Redis, with an
injected clock where time matters, and usernames of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gridlink.cache import (
    AUTHORITATIVE_TTL_SECONDS,
    SHORT_FILL_TTL_SECONDS,
    CachedProfile,
    CacheUnavailable,
    ProfileCache,
)
from gridlink.cache.positions import RAISE_POSITION, applied_key, encode_position, recent_key
from gridlink.cache.stream import ADVANCE
from gridlink.db.lsn import Position
from gridlink.settings import Settings
from tests.support.api import random_username

FILL_TTL = 600


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(settings: Settings, clock: FakeClock) -> Iterator[ProfileCache]:
    # Database 1 of the session's Redis: the session's relay keeps its position in 0.
    url = settings.redis_url.rsplit("/", 1)[0] + "/1"
    made = ProfileCache(url, write_mark_ttl=10, fill_ttl=FILL_TTL, clock=clock)
    made.client.flushdb()
    yield made
    made.close()


@pytest.fixture
def set_applied(cache: ProfileCache) -> Callable[..., None]:
    """Raise the stream's applied position as the relay does (on timeline 1 unless told)."""
    raise_position = cache.client.register_script(RAISE_POSITION)

    def set_position(lsn: int, timeline: int = 1) -> None:
        position = encode_position(Position(timeline, lsn))
        raise_position(keys=[applied_key(cache.keyspace())], args=[position, 60, 1])

    return set_position


def ttl(cache: ProfileCache, username: str) -> int:
    seconds: int = cache.client.ttl(cache.profile_key(username))
    return seconds


def fill(
    cache: ProfileCache, username: str, version: int, lsn: int | None, timeline: int = 1
) -> None:
    """Fill as a reader does: from a replica at ``lsn`` on ``timeline``, or the primary (None)."""
    with cache.fill(username) as turn:
        assert turn.filled_by_another is None
        position = None if lsn is None else Position(timeline, lsn)
        turn.store(version, b'{"v":%d}' % version, position)


def test_an_authoritative_store_lives_long_and_a_newer_version_always_wins(
    cache: ProfileCache,
) -> None:
    username = random_username("rule")
    assert cache.store_profile(username, 5, b"five")
    assert AUTHORITATIVE_TTL_SECONDS - 5 < ttl(cache, username) <= AUTHORITATIVE_TTL_SECONDS
    assert cache.store_profile(username, 4, b"four")  # answered, but older: not stored
    assert cache.store_profile(username, 5, b"five again")
    assert cache.get_profile(username) == CachedProfile(5, b"five")
    cache.store_profile(username, 6, b"")  # a tombstone wins the same way
    cached = cache.get_profile(username)
    assert cached is not None
    assert cached.is_tombstone


def test_a_fill_at_or_past_the_applied_position_lives_long(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(2**53 + 1)
    at, past = random_username("at"), random_username("past")
    fill(cache, at, 1, 2**53 + 1)
    fill(cache, past, 1, 2**60)
    assert FILL_TTL - 5 < ttl(cache, at) <= FILL_TTL
    assert FILL_TTL - 5 < ttl(cache, past) <= FILL_TTL


def test_a_fill_behind_the_applied_position_lives_one_second_even_where_doubles_are_equal(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(2**53 + 1)
    username = random_username("behind")
    fill(cache, username, 1, 2**53)  # equal to 2**53 + 1 as a Lua number
    assert 0 < ttl(cache, username) <= SHORT_FILL_TTL_SECONDS


def test_a_fill_from_another_timeline_than_the_applied_position_lives_one_second(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(1000, timeline=2)  # the relay applied changes on the new primary
    old_branch, newer = random_username("oldtl"), random_username("newtl")
    fill(cache, old_branch, 1, 2**60, timeline=1)  # far along, but on the branch left behind
    fill(cache, newer, 1, 2**60, timeline=3)  # proves nothing about what timeline 2 applied
    assert 0 < ttl(cache, old_branch) <= SHORT_FILL_TTL_SECONDS
    assert 0 < ttl(cache, newer) <= SHORT_FILL_TTL_SECONDS
    set_applied(2**40, timeline=1)  # an old relay, still cut off, cannot go back a timeline
    same = random_username("sametl")
    fill(cache, same, 1, 1000, timeline=2)
    assert FILL_TTL - 5 < ttl(cache, same) <= FILL_TTL


def test_without_an_applied_position_a_fill_from_a_replica_lives_one_second(
    cache: ProfileCache,
) -> None:
    username = random_username("unproven")
    fill(cache, username, 1, 2**40)
    assert 0 < ttl(cache, username) <= SHORT_FILL_TTL_SECONDS
    from_primary = random_username("primary")
    fill(cache, from_primary, 1, None)
    assert ttl(cache, from_primary) > FILL_TTL


def kept(cache: ProfileCache, username: str) -> bytes | None:
    """Say whether the entry is marked kept for long (b"1") or a short fill (b"0")."""
    flag: bytes | None = cache.client.hget(cache.profile_key(username), "k")  # type: ignore[assignment]
    return flag


def test_the_lease_is_the_applied_position_when_the_miss_was_taken_not_when_it_is_stored(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(1000)
    username = random_username("lease")
    with cache.fill(username) as turn:
        # Other users write meanwhile: the stream applies their changes, never this one's.
        set_applied(5000)
        turn.store(1, b"one", Position(1, 1000))
    assert FILL_TTL - 5 < ttl(cache, username) <= FILL_TTL
    assert kept(cache, username) == b"1"


def test_a_change_of_the_profile_voids_its_lease_and_a_fill_that_raced_it_lives_one_second(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(1000)
    username = random_username("raced")
    with cache.fill(username) as turn:
        # Between the fill's read (version 1) and its store: version 2 is committed and
        # stored (the relay or the write-through), and its entry evicted.
        assert cache.store_profile(username, 2, b"two")
        cache.client.delete(cache.profile_key(username))
        turn.store(1, b"one", Position(1, 2000))
    assert 0 < ttl(cache, username) <= SHORT_FILL_TTL_SECONDS
    assert kept(cache, username) == b"0"


def test_an_evicted_lease_proves_nothing(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(1000)
    username = random_username("evicted")
    with cache.fill(username) as turn:
        cache.client.delete(cache.lease_key(username))
        turn.store(1, b"one", Position(1, 2000))
    assert 0 < ttl(cache, username) <= SHORT_FILL_TTL_SECONDS


def test_a_fill_kept_short_leaves_its_lease_to_prove_the_next_one(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(1000)
    username = random_username("second")
    fill(cache, username, 1, 900)  # the replica was a moment behind the lease
    assert 0 < ttl(cache, username) <= SHORT_FILL_TTL_SECONDS
    set_applied(9000)  # others keep writing
    cache.client.delete(cache.profile_key(username))  # the short fill expires
    fill(cache, username, 1, 1000)
    assert FILL_TTL - 5 < ttl(cache, username) <= FILL_TTL


def test_a_lease_from_before_a_failover_is_replaced_on_the_next_miss(
    cache: ProfileCache, set_applied: Callable[..., None]
) -> None:
    set_applied(5000, timeline=1)
    username = random_username("failover")
    fill(cache, username, 1, 5000, timeline=1)
    cache.client.delete(cache.profile_key(username))
    set_applied(100, timeline=2)  # the relay's first round on the new primary
    fill(cache, username, 1, 100, timeline=2)
    assert FILL_TTL - 5 < ttl(cache, username) <= FILL_TTL


def test_a_lease_taken_after_a_batch_that_changed_other_profiles_asks_for_less(
    cache: ProfileCache,
) -> None:
    advance = cache.client.register_script(ADVANCE)
    keys = [applied_key(cache.keyspace()), recent_key(cache.keyspace())]
    unchanged, changed = random_username("quiet"), random_username("busy")

    def relay_batch(lsn: int, *usernames: str) -> None:
        position = encode_position(Position(1, lsn))
        advance(keys=keys, args=[position, 60, *(name.lower() for name in usernames)])

    relay_batch(1000, random_username("earlier"))
    relay_batch(2000, changed)  # the batch this replica has not replayed yet
    fill(cache, unchanged, 1, 1000)  # its changes were all applied by 1000
    fill(cache, changed, 1, 1000)  # its change is in the batch that raised to 2000
    assert FILL_TTL - 5 < ttl(cache, unchanged) <= FILL_TTL
    assert 0 < ttl(cache, changed) <= SHORT_FILL_TTL_SECONDS
    relay_batch(3000)  # an idle round keeps the record
    later = random_username("later")
    fill(cache, later, 1, 1000)
    assert FILL_TTL - 5 < ttl(cache, later) <= FILL_TTL
    cache.client.delete(keys[1])  # evicted: the applied position is the lease again
    evicted = random_username("norecord")
    fill(cache, evicted, 1, 1000)
    assert 0 < ttl(cache, evicted) <= SHORT_FILL_TTL_SECONDS


def test_the_fill_lock_is_released_by_the_store_and_others_wait_for_it(
    cache: ProfileCache,
) -> None:
    username = random_username("flight")
    with cache.fill(username) as first:
        assert first.holds_lock
        with cache.fill(username) as second:  # waits ~100 ms, finds nothing, reads itself
            assert not second.holds_lock
            assert second.filled_by_another is None
        first.store(3, b"three", None)
        assert not first.holds_lock
    cache.client.delete(cache.profile_key(username))
    with cache.fill(username) as third:  # the lock is free again
        assert third.holds_lock


def test_a_reader_whose_miss_another_filled_meanwhile_takes_that_entry_and_no_turn(
    cache: ProfileCache,
) -> None:
    username = random_username("overtaken")
    assert cache.get_profile(username) is None  # this reader's miss
    fill(cache, username, 4, None)  # another reader's whole fill, lock released
    with cache.fill(username) as late:
        assert not late.holds_lock
        assert late.filled_by_another == CachedProfile(4, b'{"v":4}')


def test_a_missing_write_mark_is_distrusted_for_a_mark_lifetime_after_a_doubt(
    cache: ProfileCache, clock: FakeClock
) -> None:
    assert cache.marks.last(10**12) is None
    cache.marks.doubt()  # as after a failed call or a new Redis lifetime
    with pytest.raises(CacheUnavailable):
        cache.marks.last(10**12)
    clock.now += cache.marks.ttl - 0.1
    with pytest.raises(CacheUnavailable):
        cache.marks.last(10**12)
    clock.now += 0.1
    assert cache.marks.last(10**12) is None
    cache.marks.remember(10**12, Position(1, 2**60 + 7))
    cache.marks.remember(10**12, Position(1, 2**60 + 6))  # an older one never replaces it
    assert cache.marks.last(10**12) == Position(1, 2**60 + 7)
    cache.marks.remember(10**12, Position(2, 5))  # a write on a newer timeline does
    assert cache.marks.last(10**12) == Position(2, 5)
