"""Operations: ``GET /metrics``, ``GET /api/admin/replicas/`` and the ``GET /admin/`` page."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources as package_files
from typing import Any

import falcon

from gridlink.accounts.tokens import Principal
from gridlink.cache.stream import StreamReport, report_stream
from gridlink.routing.policy import ServerStatus
from gridlink.routing.router import Failover, RouterSnapshot
from gridlink.schemas.operations import ReplicasOut
from gridlink.services import Services
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import App, send_object
from gridlink.web.logs import utc_timestamp
from gridlink.web.metrics import CONTENT_TYPE, current_snapshot, render
from gridlink.web.openapi import Operation, Reply, documented
from gridlink.web.security import content_security_policy, inline_source

_TAG = "operations"

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def replicas_document(snapshot: RouterSnapshot, stream: StreamReport) -> dict[str, Any]:
    """Render the router's view (and the change stream's) as ``/api/admin/replicas/``."""
    checked_at = snapshot.checked_at
    return {
        "primary": {
            "host": snapshot.primary_host,
            "reachable": snapshot.primary_reachable,
            "lsn": snapshot.primary_lsn,
        },
        "replicas": [_replica(server) for server in snapshot.replicas],
        "max_lag_seconds": snapshot.max_lag_seconds,
        "checked_at": None if checked_at is None else utc_timestamp(checked_at),
        "stream": dataclasses.asdict(stream),
        # Beyond API.md: every database host by role, and the last change of primary.
        "servers": [_server(server) for server in snapshot.servers],
        "last_failover": _failover(snapshot.last_failover),
    }


def _server(server: ServerStatus) -> dict[str, Any]:
    """Return a server's fields under API.md's names (its ``lsn`` is ``replay_lsn`` there)."""
    return {
        ("replay_lsn" if name == "lsn" else name): value
        for name, value in dataclasses.asdict(server).items()
    }


def _replica(server: ServerStatus) -> dict[str, Any]:
    """Return a replica's fields exactly as API.md lists them."""
    fields = _server(server)
    del fields["role"], fields["timeline"]
    return fields


def _failover(failover: Failover | None) -> dict[str, Any] | None:
    if failover is None:
        return None
    return {**dataclasses.asdict(failover), "at": utc_timestamp(failover.at)}


def scrape(services: Services) -> bytes:
    """Return this server's Prometheus text: every worker's counts, the router, the stream."""
    return render(
        services.metrics,
        services.router,
        lambda: report_stream(services.primary, services.cache),
    )


class Metrics:
    """Prometheus text, for admins only: it names every database host.

    Prometheus itself scrapes the internal listener (``GRIDLINK_METRICS_BIND``), not this.
    """

    def __init__(self, services: Services) -> None:
        self._services = services

    @documented(
        Operation(
            "getMetrics",
            "Prometheus metrics: requests by route and status, cache, read sources, replica lag.",
            (Reply(200, "The metrics, in Prometheus text format.", media_type=CONTENT_TYPE),),
            tag=_TAG,
        )
    )
    @authenticate(Auth.ADMIN)
    def on_get(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = scrape(self._services)


class AdminReplicas:
    def __init__(self, services: Services) -> None:
        self._services = services

    @documented(
        Operation(
            "getReplicas",
            "The replica router's view of the primary and each replica; the change stream's lag.",
            (Reply(200, "The view.", ReplicasOut),),
            tag=_TAG,
        )
    )
    @authenticate(Auth.ADMIN)
    def on_get(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        services = self._services
        stream = report_stream(services.primary, services.cache)
        send_object(resp, replicas_document(current_snapshot(services.router), stream))
        resp.cache_control = ["no-store"]


def inline_policy(page: bytes) -> str:
    """Allow the page's own inline script and style (by hash) and nothing from elsewhere."""
    sources: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, body in _INLINE.findall(page):
        sources[tag].append(inline_source(body))
    script, style = (" ".join(sources[tag]) or "'none'" for tag in (b"script", b"style"))
    return content_security_policy(script_src=script, style_src=style)


class AdminPage:
    """The replica dashboard: one self-contained HTML page that calls this same server."""

    def __init__(self) -> None:
        self._page = package_files.files("gridlink").joinpath("static/admin.html").read_bytes()
        self._policy = inline_policy(self._page)

    @documented(
        Operation(
            "getAdminPage",
            "The replica dashboard for admins: lag per replica and the read-source split.",
            (
                Reply(
                    200,
                    "The page (it logs in and polls this API itself).",
                    media_type=falcon.MEDIA_HTML,
                ),
            ),
            tag=_TAG,
            uses_database=False,
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self._page
        resp.set_header("Content-Security-Policy", self._policy)


def add_routes(app: App, services: Services) -> None:
    app.add_route("/metrics", Metrics(services))
    app.add_route("/api/admin/replicas", AdminReplicas(services))
    app.add_route("/admin", AdminPage())
