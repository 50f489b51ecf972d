"""Profile entries in Redis: the stored bytes, the store rule, leases and single-flight fills.

- **Store only if newer.** Every store goes through one Lua script that keeps
  the entry with the highest version, so a reader holding a document from a
  lagging replica never replaces a newer one (API.md promise 3). An account
  deletion stores an empty *tombstone* that wins the same way.
- **Authoritative entries live long.** Write-throughs, the change stream's
  stores and fills from the primary live ``AUTHORITATIVE_TTL_SECONDS``.
- **A fill from a replica lives long only with a lease that proves it.** A
  miss takes the profile's *lease* (``gl:<run_id>:lease:<user>``) unless one
  is held: the stream's applied position at that moment (or, for a profile
  the relay's last batch did not change, the position that batch raised
  from), an upper bound of the commit of every change of that profile the
  stream has stored so far.
  Every change of the profile stored through here (the write-through, the
  change stream) *voids* the lease in the same script. A fill is kept
  ``fill_ttl`` only if the lease is still there and the replica had replayed
  it before the fill's query began (``queries.profiles``): then the fill has
  every change of the profile stored before the lease was taken, none was
  stored since, and any later one wins by version. Otherwise (no lease: the
  stream is down, Redis lost its data, the lease was voided or evicted) it
  lives ``SHORT_FILL_TTL_SECONDS``, so nothing stale outlasts promise 4's
  bound. Writes to *other* profiles move the applied position, never this
  lease: a profile nobody changes stays cached under any write load. The
  README argues each interleaving.
- **One reader fills a miss.** A short lock lets one reader read the
  database; others wait for its store (at most ~100 ms). The lock and the
  lease are taken in one round trip, which hands back the entry instead to a
  reader whose miss was overtaken by another's store; the store releases the
  lock in another round trip.
- **Entries say whether they are kept.** Each entry's ``k`` field is ``1``
  for an entry stored for long (authoritative or proved), ``0`` for a short
  fill: a process that keeps entries in its own memory (``near``) keeps only
  the former, since only Redis's expiry bounds the latter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import redis
from redis.typing import EncodableT

from gridlink.cache.lifetime import Clock, RedisLifetime, log_redis_unavailable
from gridlink.cache.marks import WriteMarks
from gridlink.cache.near import NearCache
from gridlink.cache.positions import BEFORE_FIELD, applied_key, encode_position, recent_key
from gridlink.db.lsn import Position

AUTHORITATIVE_TTL_SECONDS = 24 * 3600
DEFAULT_FILL_TTL_SECONDS = 3600
SHORT_FILL_TTL_SECONDS = 1
FILL_LOCK_MILLISECONDS = 2000
# A lease outlives its first fill so that a fill kept short because its replica
# was a moment behind is proved by the next one; an unchanged profile's lease
# stays valid however old, this only bounds the keys a read-once profile leaves.
LEASE_SECONDS = 60
# A reader that finds another filling the same miss looks again this often, for
# as long as the filler holds its lock (at most FILL_LOCK_MILLISECONDS).
FILL_WAIT_SECONDS = 0.01

# What a store is (the store script's last argument, unless a fill's position).
CHANGE = b"change"  # a committed change (write-through, change stream): voids the lease
FROM_PRIMARY = b"primary"  # a fill from the primary: nothing is newer

# KEYS[1]: the fill lock; KEYS[2]: the profile's lease; KEYS[3]: the stream's
# applied position; KEYS[4]: its last batch's record (gridlink.cache.stream);
# KEYS[5]: the entry. ARGV: the lock's lifetime (ms), the lease's (s), the
# username (lower case). An entry stored since the reader's miss (another
# reader's fill landed in between) is returned as it is: no lock, no lease.
# Otherwise take the lock if free (1: taken), and the lease unless one is held
# on the applied position's timeline. A lease is the applied position when it was
# taken, or, for a profile the last batch did not change, the position that
# batch raised from; none without one (no proof). Replacing a lease by either
# is always sound: each bounds every change of the profile the stream stored.
TAKE_TURN = f"""
local entry = redis.call('HMGET', KEYS[5], 'v', 'd', 'k')
if entry[1] and entry[2] then
  return entry
end
local taken = redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1])
local applied = redis.call('GET', KEYS[3])
if applied then
  local lease = redis.call('GET', KEYS[2])
  if not lease or string.sub(lease, 1, 8) ~= string.sub(applied, 1, 8) then
    local before = redis.call('HGET', KEYS[4], '{BEFORE_FIELD}')
    if before and string.sub(before, 1, 8) == string.sub(applied, 1, 8)
       and redis.call('HEXISTS', KEYS[4], ARGV[3]) == 0 then
      applied = before
    end
    redis.call('SET', KEYS[2], applied, 'EX', ARGV[2])
  end
end
if taken then
  return 1
end
return 0
"""

# KEYS[1]: the entry; KEYS[2]: the profile's lease; KEYS[3] (optional): a fill lock
# to release. ARGV: version, payload, seconds to live, seconds to live without a
# proof, and what the store is: 'change' (voids the lease, whatever the version),
# 'primary', or a fill's replica position (24 hex digits), which the lease must
# prove: same timeline, at or past it.
STORE_IF_NEWER = """
if KEYS[3] then
  redis.call('DEL', KEYS[3])
end
if ARGV[5] == 'change' then
  redis.call('DEL', KEYS[2])
end
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
local ttl = ARGV[3]
local kept = '1'
if ARGV[5] ~= 'change' and ARGV[5] ~= 'primary' then
  local lease = redis.call('GET', KEYS[2])
  if not lease or string.sub(ARGV[5], 1, 8) ~= string.sub(lease, 1, 8)
     or ARGV[5] < lease then
    ttl = ARGV[4]
    kept = '0'
  end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 'k', kept)
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""


@dataclass(frozen=True)
class CachedProfile:
    """A cached profile: its version and document; an empty document is a tombstone."""

    version: int
    document: bytes
    # Whether Redis keeps it long (``k`` = 1): a short fill is not kept in memory.
    kept: bool = True

    @property
    def is_tombstone(self) -> bool:
        return not self.document


class ProfileCache:
    """Profile entries and read-your-writes marks in Redis, keyed per Redis lifetime."""

    def __init__(
        self,
        url: str,
        *,
        write_mark_ttl: int,
        fill_ttl: int = DEFAULT_FILL_TTL_SECONDS,
        socket_timeout: float = 0.5,
        clock: Clock = time.monotonic,
        sentinels: Sequence[tuple[str, int]] = (),
        service: str = "gridlink",
        near_cache_bytes: int = 0,
    ) -> None:
        self.lifetime = RedisLifetime(
            url, socket_timeout=socket_timeout, clock=clock, sentinels=sentinels, service=service
        )
        self.client = self.lifetime.client
        # This process's memory of recently read profiles (None: every read asks Redis).
        self.near = (
            NearCache(self.lifetime, max_bytes=near_cache_bytes, clock=clock)
            if near_cache_bytes
            else None
        )
        self.marks = WriteMarks(self.lifetime, ttl=write_mark_ttl)
        self.fill_ttl = fill_ttl
        self._store_if_newer = self.client.register_script(STORE_IF_NEWER)
        self._take_turn = self.client.register_script(TAKE_TURN)

    def keyspace(self) -> str:
        return self.lifetime.keyspace()

    def profile_key(self, username: str) -> str:
        return self.lifetime.key("profile", username.lower())

    def _lock_key(self, username: str) -> str:
        return self.lifetime.key("filling", username.lower())

    def lease_key(self, username: str) -> str:
        return self.lifetime.key("lease", username.lower())

    def store_arguments(
        self,
        username: str,
        version: int,
        document: bytes,
        fill_position: Position | None = None,
        *,
        change: bool = True,
    ) -> tuple[list[str], list[EncodableT]]:
        """Return the store script's keys and arguments.

        Without ``fill_position``: a committed change (``change``), or a fill
        from the primary; both authoritative. With it: a fill from a replica.
        """
        keys = [self.profile_key(username), self.lease_key(username)]
        if fill_position is None:
            kind = CHANGE if change else FROM_PRIMARY
            return keys, [version, document, AUTHORITATIVE_TTL_SECONDS, 0, kind]
        position = encode_position(fill_position)
        return keys, [version, document, self.fill_ttl, SHORT_FILL_TTL_SECONDS, position]

    # --- reads ------------------------------------------------------------------------

    def recall(self, username: str) -> CachedProfile | None:
        """Return the profile from this process's memory when it may answer; no Redis command.

        For anonymous reads only: a reader with a token may have written a
        moment ago, and memory is current only to within ``near.CURRENT_SECONDS``.
        """
        if self.near is None:
            return None
        return self.near.get(self.profile_key(username))

    def get_profile(self, username: str, *, remember: bool = False) -> CachedProfile | None:
        """Return the cached document (one round trip), or None on a miss or if Redis is down.

        ``remember``: keep what Redis answered in this process's memory (for
        ``recall``), if Redis keeps it long and nothing changed meanwhile.
        """
        near = self.near
        generation = near.generation if near is not None else 0
        try:
            key = self.profile_key(username)
            # Bytes, as stored: the client is built with decode_responses=False.
            version, document, kept = cast(
                list[bytes | None], self.client.hmget(key, ["v", "d", "k"])
            )
        except redis.RedisError as error:
            log_redis_unavailable("read", error)
            return None
        if version is None or document is None or key != self.profile_key(username):
            # A miss, or Redis restarted during the call and the key named the
            # old lifetime's (possibly stale) entry.
            return None
        cached = _entry(version, document, kept)
        if near is not None:
            # Memory never answers older than this (promise 3), and may keep it.
            near.note(key, cached, keep_from=generation if remember else None)
        return cached

    # --- stores -----------------------------------------------------------------------

    def store_profile(
        self, username: str, version: int, document: bytes, *, fill_position: Position | None = None
    ) -> bool:
        """Store the document unless the same or a newer version is cached.

        ``fill_position``: the replica's replay position for a fill from a replica
        (None: a committed change, which voids the profile's lease). Return
        False if Redis did not answer; a write-through it missed reaches it
        through the change stream.
        """
        keys, args = self.store_arguments(username, version, document, fill_position)
        try:
            self._store_if_newer(keys=keys, args=args)
        except redis.RedisError as error:
            log_redis_unavailable("store", error)
            return False
        finally:
            if self.near is not None:
                # This process's readers need not wait for the invalidation.
                self.near.discard(keys[0])
        return True

    def store_profiles(self, documents: Iterable[tuple[str, int, bytes]]) -> int | None:
        """Store authoritative documents (username, version, bytes) in one pipelined round trip.

        Each is stored only if newer. Return how many were stored, or None if
        Redis did not answer.
        """
        try:
            with self.client.pipeline(transaction=False) as pipeline:
                self.queue_stores(pipeline, documents)
                stored: list[int] = pipeline.execute()
        except redis.RedisError as error:
            log_redis_unavailable("store", error)
            return None
        return sum(stored)

    def queue_stores(
        self, pipeline: redis.client.Pipeline, documents: Iterable[tuple[str, int, bytes]]
    ) -> None:
        """Queue authoritative store-if-newer calls on ``pipeline``."""
        for username, version, document in documents:
            keys, args = self.store_arguments(username, version, document)
            self._store_if_newer(keys=keys, args=args, client=pipeline)

    # --- fills ------------------------------------------------------------------------

    @contextmanager
    def fill(self, username: str) -> Iterator[Fill]:
        """Take this reader's turn at a miss (single flight) and the lease; see ``Fill``."""
        try:
            keyspace = self.keyspace()
            keys = [self._lock_key(username), self.lease_key(username)]
            keys += [applied_key(keyspace), recent_key(keyspace), self.profile_key(username)]
            args: list[EncodableT] = [FILL_LOCK_MILLISECONDS, LEASE_SECONDS, username.lower()]
            answer = self._take_turn(keys=keys, args=args)
        except redis.RedisError as error:
            log_redis_unavailable("lock", error)
            answer = None
        if isinstance(answer, list):
            # Filled between this reader's miss and its turn: no need to read. Unless
            # Redis restarted meanwhile and the keys named the old lifetime's entry.
            turn = Fill(self, username, holds_lock=False)
            if keyspace == self.keyspace():
                turn.filled_by_another = _entry(*answer)
                if self.near is not None:  # served from the cache, as a hit would be
                    self.near.note(keys[-1], turn.filled_by_another)
        else:
            turn = Fill(self, username, holds_lock=answer == 1)
            if answer == 0:
                turn.filled_by_another = self._wait_for_fill(username)
        try:
            yield turn
        finally:
            if turn.holds_lock:
                self._release_fill_lock(username)

    def _wait_for_fill(self, username: str) -> CachedProfile | None:
        """Wait for the reader that holds the fill lock; None once it let go without an entry.

        Waiting as long as the filler works (not a fixed moment) keeps a slow
        replica or a busy process from turning one miss into a query per reader.
        """
        deadline = time.monotonic() + FILL_LOCK_MILLISECONDS / 1000
        while time.monotonic() < deadline:
            time.sleep(FILL_WAIT_SECONDS)
            try:
                # The lock first: a filler that stores and lets go between the two
                # calls is then seen by the read of the entry.
                held = bool(self.client.exists(self._lock_key(username)))
            except redis.RedisError as error:
                log_redis_unavailable("lock", error)
                return None
            cached = self.get_profile(username)
            if cached is not None or not held:
                return cached
        return None

    def _release_fill_lock(self, username: str) -> None:
        try:
            self.client.delete(self._lock_key(username))
        except redis.RedisError as error:
            log_redis_unavailable("unlock", error)

    def _store_fill(
        self, turn: Fill, version: int, document: bytes, position: Position | None
    ) -> None:
        keys, args = self.store_arguments(turn.username, version, document, position, change=False)
        if turn.holds_lock:
            keys.append(self._lock_key(turn.username))  # released by the same call
        try:
            self._store_if_newer(keys=keys, args=args)
        except redis.RedisError as error:
            log_redis_unavailable("store", error)
        if self.near is not None:  # served now: memory answers nothing older afterwards
            self.near.note(keys[0], CachedProfile(version, document))

    def close(self) -> None:
        if self.near is not None:
            self.near.close()
        self.lifetime.close()


def _entry(version: bytes, document: bytes, kept: bytes | None) -> CachedProfile:
    """Make a CachedProfile of an entry's fields as Redis returns them (v, d, k)."""
    return CachedProfile(int(version), document, kept == b"1")


class Fill:
    """One reader's turn at a miss.

    ``filled_by_another``: what another reader stored since this one's miss
    (None: read the database, then ``store`` what it gave).
    """

    def __init__(self, cache: ProfileCache, username: str, *, holds_lock: bool) -> None:
        self._cache = cache
        self.username = username
        self.holds_lock = holds_lock
        self.filled_by_another: CachedProfile | None = None

    def store(self, version: int, document: bytes, position: Position | None) -> None:
        """Store what the database gave (``position``: the replica's; None: the primary's)."""
        self._cache._store_fill(self, version, document, position)
        self.holds_lock = False  # the store released it (or Redis is away and it expires)
