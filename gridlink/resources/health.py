"""Liveness and readiness: ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import falcon
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from gridlink.cache.stream import report_stream
from gridlink.schemas.operations import HealthOut, ReadyOut
from gridlink.services import Services
from gridlink.web.http import App, send_object
from gridlink.web.openapi import Operation, Reply, documented


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


class Ready:
    """Ready when reads can be served: from the primary or from any replica."""

    def __init__(self, services: Services) -> None:
        self._services = services

    @documented(
        Operation(
            "getReadiness",
            "Readiness: whether reads can be served, and the state of each dependency.",
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
        checks = {"primary": check_database(self._services.primary)}
        # Every configured server; the write URL's own host, when no replica URL
        # names it, is the router's "primary" and already checked above.
        for server, engine in zip(
            self._services.router.snapshot().servers, self._services.replicas, strict=True
        ):
            checks.setdefault(server.name, check_database(engine))
        checks["redis"] = check_redis(self._services.redis)
        # Down, it costs cache hits (short fills), never correctness or readiness.
        checks["change_stream"] = report_stream(self._services.primary, self._services.cache).status
        databases = [
            state for name, state in checks.items() if name not in ("redis", "change_stream")
        ]
        ready = "ok" in databases
        status = "ok" if all(state == "ok" for state in checks.values()) else "degraded"
        send_object(
            resp,
            {"status": status if ready else "unavailable", "checks": checks},
            200 if ready else 503,
        )


def add_routes(app: App, services: Services) -> None:
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(services))
