"""Profiles kept in this process's memory, dropped as soon as Redis says they changed.

Every cached read costs a Redis round trip: at ~30 KB a profile, one Redis's
bandwidth is the fleet's ceiling, and a celebrity's profile is one hot key no
sharding spreads. So each server process keeps the profiles it read recently
(bounded in bytes, least recently used out first), and Redis tells it when
one changes (server-assisted client-side caching):

- **Invalidations.** A thread holds a connection of its own (RESP2) that
  asks Redis to track every key under the profile prefix and to send what
  changes to itself (``CLIENT TRACKING on REDIRECT <its id> BCAST PREFIX
  gl:<run_id>:profile:``), subscribed to ``__redis__:invalidate``. Any change
  of such a key (a store, an eviction, an expiry, a flush) arrives as a
  message, and the entry is dropped.
- **Provably current.** Redis answers a connection in order, and the
  invalidations of a write acknowledged before a ``PING`` was sent come
  before that ``PING``'s answer. The thread sends one every ``PING_SECONDS``;
  memory answers only while the last answered one was sent less than
  ``CURRENT_SECONDS`` ago: every write acknowledged before then has been
  seen (API.md promises 2 and 3). Nor while Redis is cooling off after a
  timeout (reads go to the database then).
- **Never older than what this process served** (promise 3 within a
  process). A read from Redis (a reader with a token, a miss of memory) or a
  fill may return a version whose invalidation has reached this process
  unapplied. So each one tells memory what it serves (``note``): an
  older copy is dropped at once, and the version is noted until a ``PING``
  sent after it is answered, so that a read that began earlier cannot keep
  an older copy meanwhile. By then the invalidation is applied, and such a
  keep is refused by ``generation``. All of it is a few dictionary
  operations: no system call, which on a worker's eight threads would hand
  the interpreter to the others on every read.
- **A lost connection loses the memory**, when it fails and again when the
  next one is tracking: what changed meanwhile is never served from memory.
- **A read racing a change.** An entry read from Redis is kept only if no
  invalidation arrived since the read began (``generation``): the one for
  the change it raced may have come before the entry was kept. Nor if it is
  older than memory's copy or a version noted since.
- **What is kept**: entries Redis keeps for long (``k`` = 1, see
  ``profiles``); a short fill lives a second in Redis and only Redis's expiry
  bounds it. Only anonymous reads use memory (``ProfileCache.recall``): a
  reader with a token may have just written (promise 1).
- **Kept at the second read.** A profile read from Redis is kept only if it
  was read from Redis lately too (among the last ``ADMISSION_KEYS`` to
  ``2 * ADMISSION_KEYS`` profiles read once): under reads spread over more
  profiles than memory holds, keeping each one would push out another at
  every read and keep a 30 KB document alive for nothing, a cost the reads
  it answers do not repay (README.md, "Kept at its second read"). A hot
  profile is kept at its second read. Refusing a keep is always safe: the
  read goes to Redis.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import redis

from gridlink.cache.lifetime import Clock, RedisLifetime, log_redis_unavailable

if TYPE_CHECKING:
    from gridlink.cache.profiles import CachedProfile

log = logging.getLogger(__name__)

# API.md promise 2: a process stops answering an old version this long after the
# write's answer, at the latest.
CURRENT_SECONDS = 0.1
# Two PINGs per bound and some: a late thread (a busy process) still keeps memory
# current, and an answer waiting unread (reads go to Redis then) waits rarely.
PING_SECONDS = 0.04
# What an entry costs besides its document: the key, the objects, the LRU link.
ENTRY_OVERHEAD_BYTES = 200
# How many profiles read once memory remembers, twice over (the set filling and the one
# before): about as many as 32 MiB holds of the seed's 29 KB profiles.
ADMISSION_KEYS = 1024
INVALIDATIONS = b"__redis__:invalidate"
_RECONNECT_SECONDS = 0.1
# The tracking connection waits longer than a request's Redis call: a Redis that
# stalls a moment and answers again has lost nothing, and memory is not used
# meanwhile anyway (no PING answered); a dead one is left after this long.
_TRACKING_TIMEOUT_SECONDS = 2.0


class NearCache:
    """Recently read profiles in memory, current while Redis's invalidations provably are."""

    def __init__(self, lifetime: RedisLifetime, *, max_bytes: int, clock: Clock) -> None:
        self._lifetime = lifetime
        self._clock = clock
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CachedProfile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # Moves on every invalidation and every loss of the connection.
        self.generation = 0
        # The prefix the connection tracks; None while none does.
        self._tracked: str | None = None
        # When the last answered PING was sent (the clock's time).
        self._answered_since = -math.inf
        # The newest version of each key this process served from Redis or a fill
        # since the PING in flight was sent (_noted), and before it (_sealed):
        # dropped once it is answered.
        self._noted: dict[str, int] = {}
        self._sealed: dict[str, int] = {}
        # The profiles read once lately, not kept (``_read_before``).
        self._read_once: set[str] = set()
        self._read_once_before: set[str] = set()
        self.client_id: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # --- what readers call ------------------------------------------------------------

    def get(self, key: str) -> CachedProfile | None:
        """Return the entry if memory may answer now, without asking Redis anything."""
        if not self.current():
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        return entry

    def note(self, key: str, entry: CachedProfile, *, keep_from: int | None = None) -> None:
        """Take note of the version of ``key`` this process serves; keep it if asked.

        From now on memory never answers an older version of ``key`` (promise 3).
        ``keep_from``: this cache's ``generation`` read before ``entry`` was read
        from Redis, to keep it if nothing changed since and it was read lately
        too (None: do not keep it).
        """
        size = len(entry.document) + ENTRY_OVERHEAD_BYTES
        with self._lock:
            tracked = self._tracked
            if tracked is None:
                return  # memory is empty and refuses keeps until it is tracking again
            held = self._entries.get(key)
            if held is not None and held.version < entry.version:
                self._forget(key)
                held = None
            noted = max(self._noted.get(key, 0), self._sealed.get(key, 0))
            if noted < entry.version:
                self._noted[key] = entry.version
            if not (
                keep_from == self.generation
                and entry.kept
                and held is None
                and entry.version >= noted
                and size <= self.max_bytes
                and key.startswith(tracked)
                and self._read_before(key)
            ):
                return
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._forget(next(iter(self._entries)))  # the least recently used

    def _read_before(self, key: str) -> bool:
        """Tell whether ``key`` was read lately (keep it now); else remember this read."""
        if key in self._read_once or key in self._read_once_before:
            return True
        if len(self._read_once) >= ADMISSION_KEYS:
            self._read_once_before, self._read_once = self._read_once, set()
        self._read_once.add(key)
        return False

    def discard(self, key: str) -> None:
        """Drop ``key`` now (this process changed it) and refuse reads that began before."""
        with self._lock:
            self.generation += 1
            self._forget(key)

    def clear(self) -> None:
        """Drop everything now and refuse reads that began before (Redis lost everything)."""
        with self._lock:
            self._clear()

    def current(self) -> bool:
        """Tell whether memory may answer now (starting the thread if need be).

        Not while Redis is in its cool-off either: a write may have missed it
        then (its write-through timed out), and what this process kept is only
        as new as Redis until the change stream brings it; reads go to the
        database meanwhile, as they would without memory.
        """
        self._start()
        return (
            self._clock() - self._answered_since < CURRENT_SECONDS
            and not self._lifetime.cooling_off()
        )

    @property
    def answered_since(self) -> float:
        """When (the clock's time) the last PING Redis answered was sent; -inf: none."""
        return self._answered_since

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(2)

    def _forget(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.document) + ENTRY_OVERHEAD_BYTES

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="near-cache", daemon=True)
                thread.start()
                self._thread = thread

    # --- the invalidation thread ------------------------------------------------------

    def _run(self) -> None:
        """Keep a tracking connection, reading its messages, until the cache is closed."""
        while not self._stopping.is_set():
            connection: Any = None
            try:
                connection = self._connect()
                self._listen(connection)
            except (redis.RedisError, OSError) as error:
                log_redis_unavailable("near cache invalidations", error)
            finally:
                self._lose(connection)
            self._stopping.wait(_RECONNECT_SECONDS)

    def _connect(self) -> Any:
        """Open a connection that receives every invalidation of the profile prefix."""
        pool = self._lifetime.client.connection_pool
        # RESP2 on purpose: invalidations then come as plain pub/sub messages on the
        # connection itself, in order with the PING answers.
        options = {
            **pool.connection_kwargs,
            "protocol": 2,
            "socket_timeout": _TRACKING_TIMEOUT_SECONDS,
            "client_name": "gridlink-near-cache",
            # redis-py's own health-check PING would read (and drop) an invalidation.
            "health_check_interval": 0,
        }
        connection = pool.connection_class(**options)
        connection.connect()  # the lifetime's hook learns the server's run_id
        connection.send_command("CLIENT", "ID")
        client_id = int(connection.read_response())
        prefix = self._lifetime.key("profile", "")
        connection.send_command(
            "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX", prefix
        )
        connection.read_response()
        connection.send_command("SUBSCRIBE", INVALIDATIONS)
        connection.read_response()
        with self._lock:
            self._clear()  # whatever this process read before may have changed meanwhile
            self._tracked = prefix
            self.client_id = client_id
        return connection

    def _listen(self, connection: Any) -> None:
        """PING every PING_SECONDS; apply every message; mark memory current at each answer."""
        while not self._stopping.is_set():
            with self._lock:
                # Noted before the PING: their invalidations come before its answer.
                self._sealed.update(self._noted)
                self._noted = {}
            sent_at = self._clock()
            due = time.monotonic() + PING_SECONDS
            connection.send_command("PING")
            while not (answered := self._read(connection, _TRACKING_TIMEOUT_SECONDS)):
                if answered is None:
                    raise redis.TimeoutError("the near cache's PING got no answer")
            with self._lock:
                # Applied now: a keep from a read that began before one is refused.
                self._sealed = {}
            self._answered_since = sent_at
            while (left := due - time.monotonic()) > 0 and not self._stopping.is_set():
                self._read(connection, left)

    def _read(self, connection: Any, timeout: float) -> bool | None:
        """Apply the messages that arrive within ``timeout``; say whether a PING's answer did.

        None: nothing arrived.
        """
        if not connection.can_read(timeout=timeout):
            return None
        answered = False
        while True:
            answered = self._handle(connection.read_response()) or answered
            if not connection.can_read(timeout=0):  # nothing buffered, nothing arrived
                return answered

    def _handle(self, message: list[Any]) -> bool:
        """Apply an invalidation; return True for a PING's answer."""
        if message[0] == b"pong":
            return True
        if message[0] == b"message" and message[1] == INVALIDATIONS:
            keys: list[bytes] | None = message[2]
            with self._lock:
                self.generation += 1
                if keys is None:  # FLUSHALL, FLUSHDB
                    self._clear()
                else:
                    for key in keys:
                        self._forget(key.decode())
        return False

    def _lose(self, connection: Any) -> None:
        self._answered_since = -math.inf
        with self._lock:
            self._tracked = None
            self.client_id = None
            self._clear()
        if connection is not None:
            connection.disconnect()

    def _clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._bytes = 0
        # A read noted before this refuses no keep that matters: one that began
        # earlier is refused by the generation, one that begins later reads newer.
        self._noted = {}
        self._sealed = {}
