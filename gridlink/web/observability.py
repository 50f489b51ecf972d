"""The one place that times a request: it counts it, and writes its JSON log line."""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon

from gridlink.resources.responses import READ_SOURCE_HEADER
from gridlink.web.logs import REQUEST_LOGGER, log_request
from gridlink.web.metrics import UNMATCHED_ROUTE, Metrics

log = logging.getLogger(REQUEST_LOGGER)

# Any other method string a client invents is counted under one label, so
# nobody can grow the metrics without bound.
_KNOWN_METHODS = frozenset(falcon.COMBINED_METHODS)


class RequestObserver:
    """Time each request; count it by route template and status; log one JSON line.

    Put it first in the middleware list: its ``process_request`` then runs
    before anything that may refuse the request, so even a 413 or a 401 from
    a later middleware is timed, counted and logged. Such a request was never
    routed, so its route is looked up in the app's ``router`` afterwards.
    """

    def __init__(self, metrics: Metrics, router: falcon.routing.CompiledRouter) -> None:
        self._metrics = metrics
        self._router = router

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started_at = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        self.record(
            method=req.method,
            route=req.uri_template or self._route_of(req),
            path=req.path,
            remote_addr=req.remote_addr,
            status=resp.status_code,
            duration_seconds=time.perf_counter() - req.context.started_at,
            read_source=resp.get_header(READ_SOURCE_HEADER),
            request_id=getattr(req.context, "request_id", None),
        )

    def record(
        self,
        *,
        method: str,
        route: str,
        path: str,
        remote_addr: str,
        status: int,
        duration_seconds: float,
        read_source: str | None,
        request_id: str | None,
    ) -> None:
        """Count one answered request and write its log line."""
        method = method if method in _KNOWN_METHODS else "other"
        self._metrics.observe_request(
            route=route,
            method=method,
            status=status,
            duration_seconds=duration_seconds,
            read_source=read_source,
        )
        log_request(
            log,
            {
                "method": method,
                "route": route,
                "path": path,
                "remote_addr": remote_addr,
                "status": status,
                "duration_ms": round(duration_seconds * 1000, 3),
                "read_source": read_source,
                "request_id": request_id,
            },
        )

    def _route_of(self, req: falcon.Request) -> str:
        found = self._router.find(req.path, req)
        return UNMATCHED_ROUTE if found is None or found[3] is None else found[3]
