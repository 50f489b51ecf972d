"""Operations: ``GET /metrics``, ``GET /api/admin/replicas/`` and the ``GET /admin/`` page."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from importlib import resources as package_files
from typing import Any

import falcon

from gridlink.auth import require_admin
from gridlink.http import App, send_object
from gridlink.logs import utc_timestamp
from gridlink.metrics import CONTENT_TYPE, current_snapshot, render
from gridlink.queries.router import RouterSnapshot
from gridlink.services import Services

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def replicas_document(snapshot: RouterSnapshot) -> dict[str, Any]:
    """Render the router's view as API.md's ``/api/admin/replicas/`` object."""
    checked_at = snapshot.checked_at
    return {
        "primary": {
            "host": snapshot.primary_host,
            "reachable": snapshot.primary_reachable,
            "lsn": snapshot.primary_lsn,
        },
        "replicas": [dataclasses.asdict(replica) for replica in snapshot.replicas],
        "max_lag_seconds": snapshot.max_lag_seconds,
        "checked_at": None if checked_at is None else utc_timestamp(checked_at),
    }


class Metrics:
    """Prometheus text: no auth, as scrapers expect (it carries no user data)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = render(self._services.metrics, self._services.router)


class AdminReplicas:
    def __init__(self, services: Services) -> None:
        self._router = services.router

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_admin(req)
        send_object(resp, replicas_document(current_snapshot(self._router)))
        resp.cache_control = ["no-store"]


def content_security_policy(page: bytes) -> str:
    """Allow the page's own inline script and style (by hash) and nothing from elsewhere."""
    sources: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        sources[tag].append(f"'sha256-{digest}'")
    script, style = (" ".join(sources[tag]) or "'none'" for tag in (b"script", b"style"))
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script}",
            f"style-src {style}",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


class AdminPage:
    """The replica dashboard: one self-contained HTML page that calls this same server."""

    def __init__(self) -> None:
        self._page = package_files.files("gridlink").joinpath("static/admin.html").read_bytes()
        self._policy = content_security_policy(self._page)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self._page
        resp.set_header("Content-Security-Policy", self._policy)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")


def add_routes(app: App, services: Services) -> None:
    app.add_route("/metrics", Metrics(services))
    app.add_route("/api/admin/replicas", AdminReplicas(services))
    app.add_route("/admin", AdminPage())
