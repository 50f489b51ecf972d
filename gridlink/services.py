"""The process's connections to the outside world, made from the settings.

``Services.connect(settings)`` is called once per server process (in each
gunicorn worker, after the fork), never at import time. It opens nothing
eagerly: engines and the Redis client connect on first use, so a server that
is down at start-up is simply reported by ``/readyz`` until it comes back.
The replica router's probe thread starts on first use, in the process that
uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext

from gridlink.accounts.passwords import HashSlots
from gridlink.accounts.ratelimit import Limiter
from gridlink.accounts.seals import Seal
from gridlink.cache import ProfileCache, TokenCache
from gridlink.db.tcp import dead_peer_options
from gridlink.db.urls import prefer_hosts
from gridlink.mail.backends import make_mailer
from gridlink.mail.outbox import MailPoller
from gridlink.oidc.provider import ProviderClient
from gridlink.routing.router import ReplicaRouter
from gridlink.settings import Settings
from gridlink.web.metrics import Metrics

# Short timeouts everywhere: a server that has gone away must turn into a
# quick 503 or a fallback, never into a worker stuck for minutes.
_CONNECT_TIMEOUT_SECONDS = 2
_STATEMENT_TIMEOUT_MS = 5000
_REDIS_TIMEOUT_SECONDS = 0.5
# A pooled connection to a host cut off mid-way (its pre-ping gets no ACK) is
# dropped after 2 s, so the read moves on to the next server.
_TCP_USER_TIMEOUT_MS = 2000


# SQLSTATE 25006, read_only_sql_transaction: the server this pooled connection
# reaches is a replica now (a failover demoted it).
_READ_ONLY_TRANSACTION = "25006"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine with the timeouts and pool checks every server needs."""
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        # A failing statement's error (and so its log line) never shows the
        # values it was given: password hashes, emails, tokens.
        hide_parameters=True,
        connect_args={
            "connect_timeout": _CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
            "application_name": "gridlink",
            **dead_peer_options(_TCP_USER_TIMEOUT_MS),
        },
    )
    event.listen(engine, "handle_error", _discard_demoted)
    return engine


def _discard_demoted(context: ExceptionContext) -> None:
    """Treat "read-only transaction" as a lost connection: the server was demoted.

    SQLAlchemy then throws the connection away, and every connection pooled
    before it (they reach the same demoted server); the next checkout connects
    afresh, and a multi-host URL with ``target_session_attrs=read-write`` finds
    the new primary. The request answers 503 with Retry-After (``errors``).
    """
    if getattr(context.original_exception, "pgcode", None) == _READ_ONLY_TRANSACTION:
        context.is_disconnect = True


def follow_the_router(engine: Engine, router: ReplicaRouter) -> None:
    """Let a write engine's new connections try the primary the router last saw first.

    libpq tries a multi-host URL's hosts in the order given; a host that is
    cut off costs a whole connect timeout before the next one is tried. The
    router probes every host each second, so after a failover it knows the
    new primary (and the unreachable hosts) before a fresh connection would.
    """

    def reorder(_dialect: object, _record: object, _args: object, params: dict[str, Any]) -> None:
        prefer_hosts(params, router.connect_order())

    event.listen(engine, "do_connect", reorder)


@dataclass
class Services:
    settings: Settings
    primary: Engine  # follows the primary: every database host, target_session_attrs=read-write
    cache: ProfileCache
    token_cache: TokenCache  # in the same Redis keyspace as the profile cache
    router: ReplicaRouter
    mail: MailPoller
    passwords: HashSlots
    limiter: Limiter
    # What this process counts for /metrics (its own registry: apps never share counts).
    metrics: Metrics = field(default_factory=Metrics)
    # The OpenID providers one may sign in with, by name; each keeps its discovery and keys.
    identity_providers: dict[str, ProviderClient] = field(default_factory=dict)

    @classmethod
    def connect(cls, settings: Settings) -> Services:
        primary = make_engine(settings.database_url)
        cache = ProfileCache(
            settings.redis_url,
            # Long enough for any replica in rotation (lag <= the bound) to pass it.
            write_mark_ttl=int(settings.max_replica_lag_seconds * 2) + 5,
            fill_ttl=settings.cache_fill_ttl_seconds,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            sentinels=settings.redis_sentinels,
            service=settings.redis_service,
            near_cache_bytes=settings.near_cache_bytes,
        )
        router = ReplicaRouter(
            settings.database_url,
            settings.replica_urls,
            settings.max_replica_lag_seconds,
            engine_factory=make_engine,
        )
        # An engine of its own: delivery never takes a request's pooled connection.
        mail_engine = make_engine(settings.database_url, pool_size=1)
        for engine in (primary, mail_engine):
            follow_the_router(engine, router)
        return cls(
            settings=settings,
            primary=primary,
            cache=cache,
            token_cache=TokenCache(
                cache.lifetime,
                primary,
                router.read_engines,
                idle_days=settings.token_idle_days,
                seal=Seal.for_keys(settings.token_cache_keys),
            ),
            router=router,
            mail=MailPoller(mail_engine, make_mailer(settings.mail_backend)),
            passwords=HashSlots(settings.hash_slots),
            limiter=Limiter(cache.client, settings.server_processes),
            identity_providers={
                provider.name: ProviderClient(provider) for provider in settings.oidc_providers
            },
        )

    @classmethod
    @contextmanager
    def connected(cls, settings: Settings) -> Iterator[Services]:
        """Connect for the length of a ``with`` block (commands, tests), closing on the way out."""
        services = cls.connect(settings)
        try:
            yield services
        finally:
            services.close()

    @property
    def replicas(self) -> tuple[Engine, ...]:
        """The pooled read engine of every configured database server (the router's)."""
        return self.router.read_engines

    @property
    def redis(self) -> redis.Redis:
        """The Redis client (shared with the profile cache: one pool per process)."""
        return self.cache.client

    def close(self) -> None:
        """Stop the mail poller and the router, return pooled connections (tests, worker exit)."""
        self.mail.stop()
        self.mail.engine.dispose()
        self.router.close()
        self.primary.dispose()
        self.cache.close()
        self.metrics.close()
