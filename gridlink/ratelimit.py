"""Throttling in Redis over sliding windows: failed logins, and password-reset requests.

Each counted event is one member of a Redis sorted set scored by its time,
one set per key (a username, an email, a client address). A set only keeps
the events of the last window, so "more than N in the window" is counted
exactly, without the double burst a fixed window allows at its edges.
Throttling protects accounts but must never lock everyone out: with Redis
unreachable, requests go through and a warning is logged.

Logins count failures, per username (lowercased, as typed) and per client
address. Password resets count every request, per email (lowercased, as
typed) and per client address, whether or not an account has the email: the
429 then tells nothing about which emails are registered.
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
_RESET_KEY_PREFIX = "gl:password-resets"


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


def refuse_if_over(
    client: redis.Redis, counters: Sequence[_Counter], window: int, now: float, message: str
) -> None:
    """Raise ``RateLimited`` with the longest wait if any counter is at its limit."""
    try:
        with client.pipeline(transaction=True) as pipe:
            for counter in counters:
                pipe.zremrangebyscore(counter.key, "-inf", now - window)
                pipe.zrange(counter.key, 0, -1, withscores=True)
            replies = pipe.execute()
    except redis.RedisError as problem:
        log_redis_unavailable("throttling skipped", problem)
        return
    waits = []
    # Each counter answered [removed, members]: its members are every other reply.
    for counter, members in zip(counters, replies[1::2], strict=True):
        event_times = [score for _, score in members]
        wait = retry_after_seconds(event_times, counter.limit, window, now)
        if wait is not None:
            waits.append(wait)
    if waits:
        raise RateLimited(max(waits), message)


def count_event(
    client: redis.Redis, counters: Sequence[_Counter], window: int, now: float, lost: str
) -> None:
    """Count one event at ``now`` against every counter (``lost`` is logged if Redis is down)."""
    # Unique members: two events in the same microsecond both count.
    member = f"{now:.6f}:{secrets.token_hex(4)}"
    try:
        with client.pipeline(transaction=True) as pipe:
            for counter in counters:
                pipe.zadd(counter.key, {member: now})
                pipe.zremrangebyscore(counter.key, "-inf", now - window)
                pipe.expire(counter.key, window)
            pipe.execute()
    except redis.RedisError as problem:
        log_redis_unavailable(lost, problem)


class _Throttle:
    """Counters in ``client``, limited by ``settings``, timed by ``clock``."""

    def __init__(
        self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._settings = settings
        self._clock = clock


def _counters(
    prefix: str, kind: str, name: str, limit: int, address: str | None, address_limit: int
) -> list[_Counter]:
    """One counter for ``name`` (lowercased) and, if known, one for the client ``address``."""
    counters = [_Counter(f"{prefix}:{kind}:{name.lower()}", limit)]
    if address:
        counters.append(_Counter(f"{prefix}:address:{address}", address_limit))
    return counters


class LoginThrottle(_Throttle):
    """Refuse logins after too many failures for one username or from one address."""

    def check(self, username: str, address: str | None = None) -> None:
        """Raise ``RateLimited`` (429) if ``username`` or ``address`` has failed too often."""
        refuse_if_over(
            self._redis,
            self._counters(username, address),
            self._settings.login_window_seconds,
            self._clock(),
            "Too many failed logins; try again later.",
        )

    def record_failure(self, username: str, address: str | None = None) -> None:
        """Count one failed attempt against ``username`` and ``address``."""
        count_event(
            self._redis,
            self._counters(username, address),
            self._settings.login_window_seconds,
            self._clock(),
            "failed login not counted",
        )

    def forget(self, *usernames: str) -> None:
        """Clear the failures counted against ``usernames`` (after a successful login or reset)."""
        keys = [self._username_key(username) for username in usernames]
        try:
            self._redis.delete(*keys)
        except redis.RedisError as problem:
            log_redis_unavailable("login failures not cleared", problem)

    def _counters(self, username: str, address: str | None) -> list[_Counter]:
        return _counters(
            _KEY_PREFIX,
            "username",
            username,
            self._settings.login_failures_per_username,
            address,
            self._settings.login_failures_per_address,
        )

    @staticmethod
    def _username_key(username: str) -> str:
        return f"{_KEY_PREFIX}:username:{username.lower()}"


class PasswordResetThrottle(_Throttle):
    """Refuse reset requests past the limits per email and per client address."""

    def admit(self, email: str, address: str | None = None) -> None:
        """Count one request for ``email`` from ``address``, or raise 429 if past a limit.

        A refused request is not counted: hammering does not push the end of
        the wait further away.
        """
        counters = _counters(
            _RESET_KEY_PREFIX,
            "email",
            email,
            self._settings.password_resets_per_email,
            address,
            self._settings.password_resets_per_address,
        )
        window, now = self._settings.password_reset_window_seconds, self._clock()
        refuse_if_over(
            self._redis, counters, window, now, "Too many password resets; try again later."
        )
        count_event(self._redis, counters, window, now, "password reset not counted")
