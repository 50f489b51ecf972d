"""The process's connections to the outside world, made from the settings.

``Services.connect(settings)`` is called once per server process (in each
gunicorn worker, after the fork), never at import time. It opens nothing
eagerly: engines and the Redis client connect on first use, so a server that
is down at start-up is simply reported by ``/readyz`` until it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import Engine, create_engine

from gridlink.mail import Mailer, make_mailer
from gridlink.settings import Settings

# Short timeouts everywhere: a server that has gone away must turn into a
# quick 503 or a fallback, never into a worker stuck for minutes.
_CONNECT_TIMEOUT_SECONDS = 2
_STATEMENT_TIMEOUT_MS = 5000
_REDIS_TIMEOUT_SECONDS = 0.5


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine with the timeouts and pool checks every server needs."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": _CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
            "application_name": "gridlink",
        },
    )


def make_redis(url: str) -> redis.Redis:
    """Create a Redis client that fails fast and gives bytes back, untouched."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
        socket_timeout=_REDIS_TIMEOUT_SECONDS,
        health_check_interval=30,
        decode_responses=False,
    )


@dataclass
class Services:
    settings: Settings
    primary: Engine
    replicas: list[Engine]
    redis: redis.Redis
    mailer: Mailer

    @classmethod
    def connect(cls, settings: Settings) -> Services:
        return cls(
            settings=settings,
            primary=make_engine(settings.database_url),
            replicas=[make_engine(url) for url in settings.replica_urls],
            redis=make_redis(settings.redis_url),
            mailer=make_mailer(settings.mail_backend),
        )

    def close(self) -> None:
        """Return every pooled connection (tests, and gunicorn's worker exit)."""
        self.primary.dispose()
        for engine in self.replicas:
            engine.dispose()
        self.redis.close()
