"""One Redis client per process, its keyspace (one per Redis lifetime) and its cool-off.

- **One keyspace per Redis lifetime.** Keys carry the server's ``run_id``,
  learnt on every (re)connection. A Redis that restarts with old data (an RDB
  saved on shutdown) has a new ``run_id``, so nothing written before the
  outage, and possibly made stale by writes during it, is read again.
- **A hung Redis is not waited for.** After a call times out, every call
  fails at once for a moment (``TIMEOUT_COOL_OFF_SECONDS``), as if Redis
  were down: a frozen host or a black-holed network would otherwise cost
  every call its whole timeout, twice with the retry, several times a request.
- **Sentinel.** With sentinels, the client asks them for the master of its
  service and asks again whenever a connection fails, so it follows a
  Sentinel failover without a restart. A promoted replica has its own
  ``run_id``: it counts as a Redis that lost data (a new keyspace), so
  nothing the old master held, possibly newer than what the replica got,
  is trusted, and marks missing from it mean "a recent write" for a while.
- **Credentials and TLS come with the URL.** ``rediss://user:password@host:port/db
  ?ssl_ca_certs=<ca.crt>`` connects with TLS, verifying the server's certificate
  (its name or address) against that CA, and authenticates as that ACL user. With
  sentinels the same scheme, user, password and TLS options apply to the
  Sentinel connections and to the master's (``connection_options``): one URL
  says how to reach both.
- **Redis is optional.** Callers turn Redis errors into "no answer" (a miss,
  a skipped store) and log them with ``log_redis_unavailable``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry

log = logging.getLogger(__name__)

TIMEOUT_COOL_OFF_SECONDS = 1.0

_RUN_ID = re.compile(rb"run_id:([0-9a-f]+)")

Clock = Callable[[], float]
T = TypeVar("T")


class CacheUnavailable(Exception):
    """Redis could not answer a question whose answer matters for correctness."""


class CoolOff:
    """The moment until which Redis is not asked again, shared by every connection."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until = float("-inf")

    def __deepcopy__(self, memo: dict[int, Any]) -> CoolOff:
        # redis-py deep-copies the retry policy into each connection; the
        # cool-off must stay one per client for a timeout on one to hold for all.
        return self

    def begin(self) -> None:
        self._until = self._clock() + TIMEOUT_COOL_OFF_SECONDS

    def active(self) -> bool:
        return self._clock() < self._until

    def check(self) -> None:
        if self.active():
            raise redis.TimeoutError("Redis timed out a moment ago; not asking it yet.")


class _RetryOnceUnlessCoolingOff(Retry):
    """Retry a broken connection once; never wait on Redis again right after a timeout.

    One immediate retry replaces a pooled connection that a Redis restart
    broke; more would only slow every request while it is down. A timeout is
    not retried (a restart breaks connections, it does not stall them), and
    starts the cool-off.
    """

    def __init__(self, cool_off: CoolOff) -> None:
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


def connection_options(url: str) -> dict[str, Any]:
    """Return how ``url`` says to connect, wherever the server is: db, user, password, TLS.

    The host and port are left out (Sentinel names the master). ``rediss://``
    turns TLS on with the URL's ``ssl_*`` options; the server's certificate is
    always verified, its name or address included (redis-py's defaults, kept
    explicit here so no URL option can turn them off).
    """
    parsed = parse_url(url)  # type: ignore[no-untyped-call]
    options: dict[str, Any] = {"db": int(parsed.get("db") or 0)}
    for name in ("username", "password"):
        if parsed.get(name):
            options[name] = parsed[name]
    if parsed.get("connection_class") is SSLConnection:
        options.update({name: value for name, value in parsed.items() if name.startswith("ssl_")})
        options.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True)
    return options


class RedisLifetime:
    """The process's Redis client and the key prefix of the server's current lifetime."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float,
        clock: Clock,
        sentinels: Sequence[tuple[str, int]] = (),
        service: str = "gridlink",
    ) -> None:
        self.clock = clock
        self._keyspace: str | None = None
        self._keyspace_lock = threading.Lock()
        self._on_new_lifetime: list[Callable[[], None]] = []
        self._cool_off = CoolOff(clock)
        options: dict[str, Any] = {
            "socket_connect_timeout": socket_timeout,
            "socket_timeout": socket_timeout,
            "health_check_interval": 30,
            "decode_responses": False,
            "retry": _RetryOnceUnlessCoolingOff(self._cool_off),
            "redis_connect_func": self._on_connect,
        }
        self.client: redis.Redis
        if sentinels:
            reach = connection_options(url)
            database = reach.pop("db", 0)
            asked = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(sentinels),
                sentinel_kwargs={
                    "socket_timeout": socket_timeout,
                    "socket_connect_timeout": socket_timeout,
                    **reach,
                },
            )
            self.client = asked.master_for(  # type: ignore[no-untyped-call]
                service, db=database, **reach, **options
            )
        elif url.startswith("rediss:"):
            address = parse_url(url)  # type: ignore[no-untyped-call]
            self.client = redis.Redis(
                address["host"], address["port"], **connection_options(url), **options
            )
        else:
            self.client = redis.Redis.from_url(url, **options)

    def cooling_off(self) -> bool:
        """Tell whether Redis timed out a moment ago (and is not asked for now)."""
        return self._cool_off.active()

    def on_new_lifetime(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever Redis turns out to have restarted (a new run_id)."""
        self._on_new_lifetime.append(listener)

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
                restarted = self._keyspace is not None and keyspace != self._keyspace
                self._keyspace = keyspace
            if restarted:
                for listener in self._on_new_lifetime:
                    listener()

    def keyspace(self) -> str:
        """Return the current Redis lifetime's key prefix, connecting first if need be."""
        if self._keyspace is None:
            self.client.ping()  # the connect hook learns the run_id
        return f"gl:{self._keyspace}"

    def key(self, kind: str, name: str) -> str:
        """Name a key of this lifetime: ``gl:<run_id>:<kind>:<name>``."""
        return f"{self.keyspace()}:{kind}:{name}"

    def close(self) -> None:
        self.client.close()


_last_logged = 0.0


def log_redis_unavailable(operation: str, error: Exception) -> None:
    """Log Redis trouble at most every ten seconds: while it is down, every request meets it."""
    global _last_logged
    now = time.monotonic()
    if now - _last_logged >= 10:
        _last_logged = now
        log.warning("redis unavailable (%s): %s", operation, type(error).__name__)
