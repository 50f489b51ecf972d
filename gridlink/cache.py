"""The versioned Redis cache of profile documents, and the read-your-writes marks.

Both sides use it: commands write documents through after each commit and
remember each writer's commit LSN; queries read documents and fill misses.

Correctness rests on five rules:

- **Store only if newer.** Every store goes through one Lua script that keeps
  the entry with the highest version, so a reader holding a document from a
  lagging replica can never replace a newer one (API.md promise 3). An
  account deletion stores an empty *tombstone* that wins the same way.
- **One keyspace per Redis lifetime.** Keys carry the server's ``run_id``,
  learnt on every (re)connection. A Redis that restarts with old data (an RDB
  saved on shutdown) has a new ``run_id``, so nothing written before the
  outage, and possibly made stale by writes during it, is read again.
- **Fills from a replica are short-lived.** Write-through entries and fills
  from the primary are authoritative and live long; a fill from a replica
  (at most ``max_lag`` behind) lives one second, so after a flush or an
  eviction a stale fill cannot outlast promise 4's bound.
- **A lost mark is a recent write.** When Redis fails a call, or comes back
  as a new lifetime, a missing read-your-writes mark may be one it lost: for
  as long as a mark would have lived, this process sends such readers to the
  primary.
- **A write-through Redis missed is stored later.** A Redis that stops
  answering for a while (hung, partitioned) and then answers again keeps its
  run_id and its data: the document a write replaced while it was away would
  be served for a day. So a write-through that fails is kept in the process
  and stored (only if newer, as always) as soon as Redis answers again.
- **A hung Redis is not waited for.** After a call times out, every call
  fails at once for a moment (``TIMEOUT_COOL_OFF_SECONDS``), as if Redis
  were down: a frozen host or a black-holed network would otherwise cost
  every call its whole timeout, twice with the retry, several times a request.
- **Redis is optional.** Every method here turns Redis errors into "no
  answer" (a miss, a skipped store) and logs them; callers fall back to the
  database. Nothing here ever raises because Redis is down.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

AUTHORITATIVE_TTL_SECONDS = 24 * 3600
REPLICA_FILL_TTL_SECONDS = 1
FILL_LOCK_MILLISECONDS = 2000
# How often write-throughs that Redis missed are tried again while it is away.
RESTORE_INTERVAL_SECONDS = 0.5
# Past this many users written during one outage, the oldest missed
# write-throughs are forgotten (logged): memory stays bounded.
MAX_UNSTORED = 10_000
TIMEOUT_COOL_OFF_SECONDS = 1.0

# KEYS[1]: the hash; ARGV: version, payload, ttl seconds.
_STORE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RUN_ID = re.compile(rb"run_id:([0-9a-f]+)")

T = TypeVar("T")


class CacheUnavailable(Exception):
    """Redis could not answer a question whose answer matters for correctness."""


@dataclass(frozen=True)
class CachedProfile:
    """A cached profile: its version and document; an empty document is a tombstone."""

    version: int
    document: bytes

    @property
    def is_tombstone(self) -> bool:
        return not self.document


class _CoolOff:
    """The moment until which Redis is not asked again, shared by every connection."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until = float("-inf")

    def __deepcopy__(self, memo: dict[int, Any]) -> _CoolOff:
        # redis-py deep-copies the retry policy into each connection; the
        # cool-off must stay one per client for a timeout on one to hold for all.
        return self

    def begin(self) -> None:
        self._until = self._clock() + TIMEOUT_COOL_OFF_SECONDS

    def check(self) -> None:
        if self._clock() < self._until:
            raise redis.TimeoutError("Redis timed out a moment ago; not asking it yet.")


class _RetryOnceUnlessCoolingOff(Retry):
    """Retry a broken connection once; never wait on Redis again right after a timeout.

    One immediate retry replaces a pooled connection that a Redis restart
    broke; more would only slow every request while it is down. A timeout is
    not retried (a restart breaks connections, it does not stall them), and
    starts the cool-off.
    """

    def __init__(self, cool_off: _CoolOff) -> None:
        super().__init__(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        self._cool_off = cool_off

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        self._cool_off.check()
        try:
            return super().call_with_retry(do, fail, is_retryable, with_failure_count)
        except (TimeoutError, redis.TimeoutError):
            self._cool_off.begin()
            raise


class ProfileCache:
    """Profile documents and read-your-writes marks in Redis, keyed per Redis lifetime."""

    def __init__(
        self,
        url: str,
        *,
        write_mark_ttl: int,
        socket_timeout: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keyspace: str | None = None
        self.write_mark_ttl = write_mark_ttl
        # Until then, a missing write mark may be one that Redis lost (it was
        # down, or restarted): the reader must assume a recent write.
        self._unsure_until = 0.0
        self._keyspace_lock = threading.Lock()
        # Write-throughs Redis did not take: lower-cased username -> (version, document).
        self._unstored: dict[str, tuple[int, bytes]] = {}
        self._unstored_lock = threading.Lock()
        self._restorer: threading.Thread | None = None
        self._cool_off = _CoolOff(clock)
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=30,
            decode_responses=False,
            retry=_RetryOnceUnlessCoolingOff(self._cool_off),
            redis_connect_func=self._on_connect,
        )
        self._store_if_newer = self.client.register_script(_STORE_IF_NEWER)

    def _on_connect(self, connection: Any) -> None:
        """Learn the server's run_id whenever a connection is (re)made."""
        connection.on_connect()
        connection.send_command("INFO", "server")
        try:
            match = _RUN_ID.search(connection.read_response())
        except redis.TimeoutError:
            self._cool_off.begin()  # a hung Redis accepts connections, then answers nothing
            raise
        if match is not None:
            with self._keyspace_lock:
                keyspace = match.group(1)[:16].decode()
                if self._keyspace is not None and keyspace != self._keyspace:
                    self._doubt_write_marks()
                self._keyspace = keyspace

    def keyspace(self) -> str:
        """Return the current Redis lifetime's key prefix, connecting first if need be."""
        if self._keyspace is None:
            self.client.ping()  # the connect hook learns the run_id
        return f"gl:{self._keyspace}"

    def profile_key(self, username: str) -> str:
        return f"{self.keyspace()}:profile:{username.lower()}"

    def written_key(self, user_id: int) -> str:
        return f"{self.keyspace()}:written:{user_id}"

    def lock_key(self, username: str) -> str:
        return f"{self.keyspace()}:filling:{username.lower()}"

    # --- profiles ---------------------------------------------------------------

    def get_profile(self, username: str) -> CachedProfile | None:
        """Return the cached document (one round trip), or None on a miss or if Redis is down."""
        try:
            key = self.profile_key(username)
            # Bytes, as stored: the client is built with decode_responses=False.
            version, document = cast(list[bytes | None], self.client.hmget(key, ["v", "d"]))
        except redis.RedisError as error:
            log_redis_unavailable("read", error)
            return None
        if version is None or document is None or key != self.profile_key(username):
            # A miss, or Redis restarted during the call and the key named the
            # old lifetime's (possibly stale) entry.
            return None
        return CachedProfile(int(version), document)

    def store_profile(
        self, username: str, version: int, document: bytes, *, authoritative: bool
    ) -> None:
        """Store the document unless the same or a newer version is cached."""
        ttl = AUTHORITATIVE_TTL_SECONDS if authoritative else REPLICA_FILL_TTL_SECONDS
        try:
            self._store_if_newer(keys=[self.profile_key(username)], args=[version, document, ttl])
        except redis.RedisError as error:
            log_redis_unavailable("store", error)
            if authoritative:
                # Redis may come back with the older document it holds: store this one then.
                self._keep_unstored(username.lower(), version, document)

    def _keep_unstored(self, username: str, version: int, document: bytes) -> None:
        with self._unstored_lock:
            kept = self._unstored.get(username)
            if kept is None or kept[0] < version:
                self._unstored[username] = (version, document)
            if len(self._unstored) > MAX_UNSTORED:
                del self._unstored[next(iter(self._unstored))]
                log.warning("too many profiles written while redis was away; one may go stale")
            # is_alive: a forked child inherits the attribute but not the thread.
            if self._restorer is None or not self._restorer.is_alive():
                self._restorer = threading.Thread(
                    target=self._restore_unstored, name="gridlink-cache-restore", daemon=True
                )
                self._restorer.start()

    def _restore_unstored(self) -> None:
        """Store the missed write-throughs once Redis answers; end when none is left."""
        while True:
            time.sleep(RESTORE_INTERVAL_SECONDS)
            with self._unstored_lock:
                pending = list(self._unstored.items())
            for username, (version, document) in pending:
                try:
                    self._store_if_newer(
                        keys=[self.profile_key(username)],
                        args=[version, document, AUTHORITATIVE_TTL_SECONDS],
                    )
                except redis.RedisError:
                    break  # still away: try again after the interval
                with self._unstored_lock:
                    if self._unstored.get(username, (None, b""))[0] == version:
                        del self._unstored[username]
            with self._unstored_lock:
                if not self._unstored:
                    self._restorer = None
                    return

    def store_profiles(self, documents: Iterable[tuple[str, int, bytes]]) -> int | None:
        """Store authoritative documents (username, version, bytes) in one pipelined round trip.

        Each is stored only if newer, as ``store_profile`` does. Return how
        many were stored, or None if Redis did not answer.
        """
        try:
            with self.client.pipeline(transaction=False) as pipeline:
                for username, version, document in documents:
                    self._store_if_newer(
                        keys=[self.profile_key(username)],
                        args=[version, document, AUTHORITATIVE_TTL_SECONDS],
                        client=pipeline,
                    )
                stored: list[int] = pipeline.execute()
        except redis.RedisError as error:
            log_redis_unavailable("store", error)
            return None
        return sum(stored)

    def try_fill_lock(self, username: str) -> bool | None:
        """Take the short lock that lets one reader fill a miss; None if Redis is down."""
        try:
            taken = self.client.set(
                self.lock_key(username), b"1", nx=True, px=FILL_LOCK_MILLISECONDS
            )
        except redis.RedisError as error:
            log_redis_unavailable("lock", error)
            return None
        return bool(taken)

    def release_fill_lock(self, username: str) -> None:
        try:
            self.client.delete(self.lock_key(username))
        except redis.RedisError as error:
            log_redis_unavailable("unlock", error)

    # --- read-your-writes ----------------------------------------------------------------

    def remember_write(self, user_id: int, lsn: int) -> None:
        """Remember the primary's WAL position after ``user_id``'s latest write."""
        try:
            self._store_if_newer(
                keys=[self.written_key(user_id)], args=[lsn, b"", self.write_mark_ttl]
            )
        except redis.RedisError as error:
            log_redis_unavailable("remember write", error)
            self._doubt_write_marks()

    def last_write(self, user_id: int) -> int | None:
        """Return the WAL position of the user's last write, or None if none is remembered.

        Raises ``CacheUnavailable`` when Redis cannot say: the caller must then
        assume a recent write and read from the primary.
        """
        try:
            key = self.written_key(user_id)
            lsn = self.client.hget(key, "v")
        except redis.RedisError as error:
            log_redis_unavailable("read write mark", error)
            self._doubt_write_marks()
            raise CacheUnavailable() from error
        if key != self.written_key(user_id):
            raise CacheUnavailable()  # Redis restarted during the call
        if lsn is None:
            if time.monotonic() < self._unsure_until:
                raise CacheUnavailable()
            return None
        return int(lsn)

    def _doubt_write_marks(self) -> None:
        """Distrust missing write marks for as long as a mark would have lived."""
        self._unsure_until = time.monotonic() + self.write_mark_ttl

    def close(self) -> None:
        with self._unstored_lock:
            self._unstored.clear()  # the restorer thread ends at its next round
        self.client.close()


_last_logged = 0.0


def log_redis_unavailable(operation: str, error: Exception) -> None:
    """Log Redis trouble at most every ten seconds: while it is down, every request meets it."""
    global _last_logged
    now = time.monotonic()
    if now - _last_logged >= 10:
        _last_logged = now
        log.warning("redis unavailable (%s): %s", operation, type(error).__name__)
