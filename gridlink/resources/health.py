"""Liveness and readiness: ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import falcon
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from gridlink.cache.stream import report_stream
from gridlink.schemas.operations import HealthOut, ReadyOut
from gridlink.services import Services
from gridlink.web.http import App, send_object
from gridlink.web.openapi import Operation, Reply, documented

# A readiness answer is at most this old.
READINESS_MAX_AGE_SECONDS = 1.0


def check_database(engine: Engine) -> str:
    """Say ``ok`` if the server answers a query, else why not (without internals)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return "unreachable"
    return "ok"


def check_redis(client: redis.Redis) -> str:
    try:
        client.ping()
    except redis.RedisError:
        return "unreachable"
    return "ok"


class Health:
    @documented(
        Operation(
            "getHealth",
            "Liveness: answers while the process serves.",
            (Reply(200, "Serving.", HealthOut),),
            tag="operations",
            uses_database=False,
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_object(resp, {"status": "ok"})


@dataclass(frozen=True)
class Readiness:
    """One measurement of the dependencies: the body and status ``/readyz`` answers."""

    body: dict[str, Any]
    status: int


class ReadinessCheck:
    """Measure the dependencies at most once a second; every caller meanwhile shares it.

    ``/readyz`` is public: measured per call, each request would open a
    connection to every database. One measurement serves every call of the
    next second, and callers that arrive while it runs wait for it rather
    than start their own.
    """

    def __init__(
        self,
        services: Services,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = READINESS_MAX_AGE_SECONDS,
    ) -> None:
        self._services = services
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()
        self._last: tuple[float, Readiness] | None = None

    def current(self) -> Readiness:
        """The last measurement if it is younger than ``max_age``, else a new one."""
        with self._lock:
            if self._last is None or self._clock() - self._last[0] >= self._max_age:
                # Timed from its start: the answer is never older than max_age.
                started = self._clock()
                self._last = (started, self._measure())
            return self._last[1]

    def _measure(self) -> Readiness:
        services = self._services
        checks = {"primary": check_database(services.primary)}
        # Every configured server; the write URL's own host, when no replica URL
        # names it, is the router's "primary" and already checked above.
        for server, engine in zip(
            services.router.snapshot().servers, services.replicas, strict=True
        ):
            checks.setdefault(server.name, check_database(engine))
        checks["redis"] = check_redis(services.redis)
        # Down, it costs cache hits (short fills), never correctness or readiness.
        checks["change_stream"] = report_stream(services.primary, services.cache).status
        databases = [
            state for name, state in checks.items() if name not in ("redis", "change_stream")
        ]
        ready = "ok" in databases
        status = "ok" if all(state == "ok" for state in checks.values()) else "degraded"
        return Readiness(
            {"status": status if ready else "unavailable", "checks": checks}, 200 if ready else 503
        )


class Ready:
    """Ready when reads can be served: from the primary or from any replica."""

    def __init__(self, readiness: ReadinessCheck) -> None:
        self._readiness = readiness

    @documented(
        Operation(
            "getReadiness",
            "Readiness: whether reads can be served, and the state of each dependency "
            "(measured at most once a second).",
            (
                Reply(200, "Reads can be served (`degraded` if a dependency is down).", ReadyOut),
                Reply(503, "No database answers: reads cannot be served.", ReadyOut),
            ),
            tag="operations",
            # Its 503 is the readiness body above, not an error.
            uses_database=False,
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        readiness = self._readiness.current()
        send_object(resp, readiness.body, readiness.status)


def add_routes(app: App, services: Services) -> None:
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(ReadinessCheck(services)))
