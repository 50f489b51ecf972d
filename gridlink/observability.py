"""The one place that times a request: it counts it, and writes its JSON log line."""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon

from gridlink.logs import REQUEST_LOGGER
from gridlink.metrics import UNMATCHED_ROUTE, Metrics
from gridlink.resources.responses import READ_SOURCE_HEADER

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
        duration = time.perf_counter() - req.context.started_at
        route = req.uri_template or self._route_of(req)
        method = req.method if req.method in _KNOWN_METHODS else "other"
        status = resp.status_code
        read_source = resp.get_header(READ_SOURCE_HEADER)
        self._metrics.observe_request(
            route=route, method=method, status=status, duration_seconds=duration
        )
        if read_source is not None:
            self._metrics.observe_read(read_source)
        log.info(
            "request",
            extra={
                "method": method,
                "route": route,
                "path": req.path,
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "read_source": read_source,
                "request_id": getattr(req.context, "request_id", None),
            },
        )

    def _route_of(self, req: falcon.Request) -> str:
        found = self._router.find(req.path, req)
        return UNMATCHED_ROUTE if found is None or found[3] is None else found[3]
