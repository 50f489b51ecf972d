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
  seen (API.md promises 2 and 3). Nor while the thread is applying messages;
  nor while Redis is cooling off after a timeout (reads go to the database
  then).
- **Never older than what this process read from Redis** (promise 3 within a
  process). A read from Redis (a reader with a token, a miss of memory) may
  return a version whose invalidation has reached this process unapplied.
  So after each such read the process looks at the socket (``after_redis_read``),
  and if a message waits there, memory does not answer until the thread has
  taken everything off it. A read from memory costs no system call: on a
  worker's eight threads, each one would hand the others the interpreter.
- **A lost connection loses the memory**, when it fails and again when the
  next one is tracking: what changed meanwhile is never served from memory.
- **A read racing a change.** An entry read from Redis is kept only if no
  invalidation arrived since the read began (``generation``): the one for
  the change it raced may have come before the entry was kept.
- **What is kept**: entries Redis keeps for long (``k`` = 1, see
  ``profiles``); a short fill lives a second in Redis and only Redis's expiry
  bounds it. Only anonymous reads use memory (``ProfileCache.recall``): a
  reader with a token may have just written (promise 1).
"""

from __future__ import annotations

import itertools
import logging
import math
import select
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
        # The connection's socket, polled for an unread message; None without one.
        self._socket: int | None = None
        # Whether the thread is taking messages off the socket and applying them.
        self._reading = False
        # Raised when a reader finds a message unread on the socket; the thread
        # copies it to _emptied once it found the socket empty after the raise.
        self._raises = itertools.count(1)
        self._raised = 0
        self._emptied = 0
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

    def keep(self, key: str, entry: CachedProfile, generation: int) -> None:
        """Keep what Redis answered for ``key``, unless anything was invalidated since the read.

        ``generation``: this cache's ``generation`` read before the Redis read.
        """
        size = len(entry.document) + ENTRY_OVERHEAD_BYTES
        tracked = self._tracked
        if size > self.max_bytes or tracked is None or not key.startswith(tracked):
            return
        with self._lock:
            if generation != self.generation:
                return
            self._forget(key)
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._forget(next(iter(self._entries)))  # the least recently used

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
            and self._emptied == self._raised
            and not self._reading
            and not self._lifetime.cooling_off()
        )

    def after_redis_read(self) -> None:
        """Keep memory from answering while an invalidation waits unread (after a Redis read).

        What Redis just answered may be newer than memory's copy; Redis sent the
        invalidation of that copy before its answer, so it is on the socket
        (or being applied) now if it is not applied yet.
        """
        if self._unread():
            self._raised = next(self._raises)

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

    def _unread(self) -> bool:
        """Tell whether a message has reached this process and is not applied yet."""
        descriptor = self._socket
        if descriptor is None:
            return True
        # A poll object of its own: one may not be polled by two threads at once.
        poll = select.poll()
        poll.register(descriptor, select.POLLIN)
        # The socket first, then the flag: a message the thread takes off the socket
        # after the poll was taken after it set the flag.
        return bool(poll.poll(0)) or self._reading

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
        # redis-py has no public accessor for the socket; a poll of it costs no
        # Redis command, and says whether a message waits unread.
        descriptor = connection._sock.fileno()
        with self._lock:
            self._clear()  # whatever this process read before may have changed meanwhile
            self._tracked = prefix
            self._socket = descriptor
            self.client_id = client_id
        return connection

    def _listen(self, connection: Any) -> None:
        """PING every PING_SECONDS; apply every message; mark memory current at each answer."""
        while not self._stopping.is_set():
            sent_at = self._clock()
            due = time.monotonic() + PING_SECONDS
            connection.send_command("PING")
            while not (answered := self._read(connection, _TRACKING_TIMEOUT_SECONDS)):
                if answered is None:
                    raise redis.TimeoutError("the near cache's PING got no answer")
            self._answered_since = sent_at
            while (left := due - time.monotonic()) > 0 and not self._stopping.is_set():
                self._read(connection, left)

    def _read(self, connection: Any, timeout: float) -> bool | None:
        """Apply the messages that arrive within ``timeout``; say whether a PING's answer did.

        None: nothing arrived.

        Readers are kept from memory from before the first byte is taken off the
        socket until the last message taken is applied (``_reading``): in between,
        an invalidation is neither unread on the socket nor applied yet.
        """
        raised = self._raised
        if not connection.can_read(timeout=timeout):
            self._emptied = raised
            return None
        answered = False
        self._reading = True
        try:
            while True:
                answered = self._handle(connection.read_response()) or answered
                raised = self._raised
                if not connection.can_read(timeout=0):  # nothing buffered, nothing arrived
                    # Whatever a reader saw unread before ``raised`` is applied now.
                    self._emptied = raised
                    return answered
        finally:
            self._reading = False

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
            self._socket = None
            self._tracked = None
            self.client_id = None
            self._clear()
        if connection is not None:
            connection.disconnect()

    def _clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._bytes = 0
