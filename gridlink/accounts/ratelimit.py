"""Sliding-window limits: attempts reserved atomically, in Redis or, without it, in the process.

Each counted attempt is one member of a Redis sorted set scored by its time,
one set per counter (an account, a login as typed, an email, a client
address, every sign-up). A set only keeps the attempts of its window, so "N
in the window" is counted exactly, without the double burst a fixed window
allows at its edges.

An attempt is *reserved* before the work it guards (one Lua script checks
every counter and, only if all are under their limits, adds the attempt to
each): 32 concurrent guesses against a limit of 5 let exactly 5 through. An
attempt that turns out not to count (a login that succeeds, a check the
server could not run) is given back.

With Redis unreachable the same windows are kept in the process's memory,
each process allowing its share of the limit (limit / server processes, at
least 1): an outage of Redis, or one an attacker provokes, is never an open
door.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from gridlink.cache import log_redis_unavailable
from gridlink.errors import RateLimited

# At most this many counters are kept in memory per process while Redis is down.
LOCAL_COUNTERS_CAPACITY = 20_000

# KEYS: the counters; ARGV: now, the attempt's member, then limit and window per counter.
# Returns 0 once the attempt is counted everywhere, else the longest wait in seconds.
_RESERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local releasing = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local until_free = math.ceil(tonumber(releasing[2]) + window - now)
    wait = math.max(wait, until_free, 1)
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('EXPIRE', key, tonumber(ARGV[2 + 2 * i]))
end
return 0
"""


@dataclass(frozen=True)
class Window:
    """At most ``limit`` attempts counted under ``key`` in any ``seconds``."""

    key: str
    limit: int
    seconds: int


@dataclass(frozen=True)
class Reservation:
    """One attempt counted under ``keys`` (in Redis, or in this process if ``local``)."""

    keys: tuple[str, ...]
    member: str
    local: bool


def retry_after_seconds(
    attempt_times: Sequence[float], limit: int, window_seconds: int, now: float
) -> int | None:
    """Return how long until another attempt is allowed, or ``None`` if it is allowed now.

    ``attempt_times`` are the attempts of the current window; another is
    allowed while fewer than ``limit`` of them remain.
    """
    if len(attempt_times) < limit:
        return None
    ordered = sorted(attempt_times)
    # Enough attempts must leave the window to drop below the limit: the
    # next is allowed once the (len - limit + 1)-th oldest is out.
    releasing = ordered[len(ordered) - limit]
    return max(1, math.ceil(releasing + window_seconds - now))


class LocalWindows:
    """The windows of one process, for when Redis cannot be asked.

    Each limit is divided by the number of server processes (at least 1 is
    allowed), so all processes together allow about what Redis would.
    Memory is bounded: past ``capacity`` counters the oldest are forgotten.
    """

    def __init__(self, processes: int, capacity: int = LOCAL_COUNTERS_CAPACITY) -> None:
        self._processes = max(1, processes)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._attempts: dict[str, dict[str, float]] = {}

    def share(self, limit: int) -> int:
        """This process's part of ``limit``."""
        return max(1, limit // self._processes)

    def reserve(self, windows: Sequence[Window], member: str, now: float) -> int:
        """Count the attempt in every window and return 0, or return the wait (counting nothing)."""
        with self._lock:
            waits = []
            for window in windows:
                attempts = self._attempts.get(window.key, {})
                live = {m: t for m, t in attempts.items() if t > now - window.seconds}
                self._attempts[window.key] = live
                wait = retry_after_seconds(
                    list(live.values()), self.share(window.limit), window.seconds, now
                )
                if wait is not None:
                    waits.append(wait)
            if waits:
                return max(waits)
            for window in windows:
                self._attempts.setdefault(window.key, {})[member] = now
            while len(self._attempts) > self._capacity:
                del self._attempts[next(iter(self._attempts))]
            return 0

    def release(self, keys: Sequence[str], member: str | None) -> None:
        """Forget ``member`` under ``keys`` (every attempt if ``member`` is ``None``)."""
        with self._lock:
            for key in keys:
                if member is None:
                    self._attempts.pop(key, None)
                else:
                    self._attempts.get(key, {}).pop(member, None)


class Limiter:
    """Reserve attempts against windows in ``client``, falling back to ``LocalWindows``."""

    def __init__(
        self,
        client: redis.Redis,
        processes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._reserve_script = client.register_script(_RESERVE_SCRIPT)
        self._local = LocalWindows(processes)
        self._clock = clock

    def reserve(self, windows: Sequence[Window], message: str) -> Reservation:
        """Count one attempt in every window, or raise ``RateLimited`` (429) counting nothing."""
        now = self._clock()
        # Unique members: two attempts in the same microsecond both count.
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        keys = tuple(window.key for window in windows)
        local = False
        try:
            arguments: list[float | int | str] = [now, member]
            for window in windows:
                arguments += [window.limit, window.seconds]
            wait = int(self._reserve_script(keys=list(keys), args=arguments))
        except redis.RedisError as problem:
            log_redis_unavailable("limits kept in this process", problem)
            local = True
            wait = self._local.reserve(windows, member, now)
        if wait:
            raise RateLimited(wait, message)
        return Reservation(keys, member, local)

    def give_back(self, reservation: Reservation, keys: Sequence[str] | None = None) -> None:
        """Uncount a reserved attempt (under ``keys`` only, if given)."""
        keys = reservation.keys if keys is None else keys
        if reservation.local:
            self._local.release(keys, reservation.member)
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, reservation.member)
                pipe.execute()
        except redis.RedisError as problem:
            log_redis_unavailable("attempt not given back", problem)

    def clear(self, *keys: str) -> None:
        """Forget every attempt counted under ``keys``, wherever they were counted."""
        self._local.release(keys, None)
        try:
            self._redis.delete(*keys)
        except redis.RedisError as problem:
            log_redis_unavailable("attempts not cleared", problem)
