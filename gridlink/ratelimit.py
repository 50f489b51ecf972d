"""Login throttling: failed attempts counted in Redis over a sliding window.

Each failure is one member of a Redis sorted set scored by its time, one set
per username (lowercased, as typed) and one per client address. A set only
keeps the failures of the last window, so "more than N failures in the window"
is counted exactly, without the double burst a fixed window allows at its
edges. Throttling protects passwords but must never lock everyone out: with
Redis unreachable, logins go through and a warning is logged.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from gridlink.cache import log_redis_unavailable
from gridlink.errors import RateLimited
from gridlink.settings import Settings

_KEY_PREFIX = "gl:login-failures"


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int


def retry_after_seconds(
    failure_times: Sequence[float], limit: int, window_seconds: int, now: float
) -> int | None:
    """Return how long until another attempt is allowed, or ``None`` if it is allowed now.

    ``failure_times`` are the failures of the current window; an attempt is
    allowed while fewer than ``limit`` of them remain.
    """
    if len(failure_times) < limit:
        return None
    ordered = sorted(failure_times)
    # Enough failures must leave the window to drop below the limit: the
    # attempt is allowed again once the (len - limit + 1)-th oldest is out.
    releasing = ordered[len(ordered) - limit]
    return max(1, math.ceil(releasing + window_seconds - now))


class LoginThrottle:
    """Refuse logins after too many failures for one username or from one address."""

    def __init__(
        self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._settings = settings
        self._clock = clock

    def check(self, username: str, address: str | None = None) -> None:
        """Raise ``RateLimited`` (429) if ``username`` or ``address`` has failed too often."""
        now = self._clock()
        window = self._settings.login_window_seconds
        counters = self._counters(username, address)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for counter in counters:
                    pipe.zremrangebyscore(counter.key, "-inf", now - window)
                    pipe.zrange(counter.key, 0, -1, withscores=True)
                replies = pipe.execute()
        except redis.RedisError as problem:
            log_redis_unavailable("login throttling skipped", problem)
            return
        waits = []
        # Each counter answered [removed, members]: its members are every other reply.
        for counter, members in zip(counters, replies[1::2], strict=True):
            failure_times = [score for _, score in members]
            wait = retry_after_seconds(failure_times, counter.limit, window, now)
            if wait is not None:
                waits.append(wait)
        if waits:
            raise RateLimited(max(waits), "Too many failed logins; try again later.")

    def record_failure(self, username: str, address: str | None = None) -> None:
        """Count one failed attempt against ``username`` and ``address``."""
        now = self._clock()
        window = self._settings.login_window_seconds
        # Unique members: two failures in the same microsecond both count.
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for counter in self._counters(username, address):
                    pipe.zadd(counter.key, {member: now})
                    pipe.zremrangebyscore(counter.key, "-inf", now - window)
                    pipe.expire(counter.key, window)
                pipe.execute()
        except redis.RedisError as problem:
            log_redis_unavailable("failed login not counted", problem)

    def forget(self, *usernames: str) -> None:
        """Clear the failures counted against ``usernames`` (after a successful login or reset)."""
        keys = [self._username_key(username) for username in usernames]
        try:
            self._redis.delete(*keys)
        except redis.RedisError as problem:
            log_redis_unavailable("login failures not cleared", problem)

    def _counters(self, username: str, address: str | None) -> list[_Counter]:
        counters = [
            _Counter(self._username_key(username), self._settings.login_failures_per_username)
        ]
        if address:
            counters.append(
                _Counter(
                    f"{_KEY_PREFIX}:address:{address}", self._settings.login_failures_per_address
                )
            )
        return counters

    @staticmethod
    def _username_key(username: str) -> str:
        return f"{_KEY_PREFIX}:username:{username.lower()}"
