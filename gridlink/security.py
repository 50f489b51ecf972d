"""What every answer tells browsers: CORS for the allowed origins, and security headers.

Clients authenticate with the ``Authorization`` header, never cookies, so CORS
never allows credentials: a page from an allowed origin can call the API with
a token it holds, and a page from any other origin gets no CORS headers at all
(the browser then keeps the answer from it). Nothing is allowed unless
``GRIDLINK_CORS_ORIGINS`` names exact origins.
"""

from __future__ import annotations

from typing import Any

import falcon

from gridlink.settings import Settings

ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-None-Match",
    "X-Request-Id",
)
EXPOSED_HEADERS = ("ETag", "Location", "X-Request-Id", "X-Gridlink-Read-Source", "Retry-After")
# How long a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE_SECONDS = 600

SECURITY_HEADERS = {
    # A JSON answer is never to be sniffed into HTML or script.
    "X-Content-Type-Options": "nosniff",
    # Nothing here is meant to be framed (clickjacking) or to leak its URL onward.
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def cache_control(req: falcon.Request, resp: falcon.Response) -> str:
    """Say how an answer may be cached, without breaking ``ETag`` revalidation.

    Errors and answers to writes (which may carry a token) are never stored.
    Reads may be stored but must be revalidated every time (``no-cache``), so
    the ``ETag`` of a profile still saves the body while no cache serves a
    stale profile; answers to a token are for that client only (``private``).
    """
    if resp.status_code >= 400 or req.method not in ("GET", "HEAD"):
        return "no-store"
    if req.get_header("Authorization") is not None:
        return "private, no-cache"
    return "no-cache"


class BrowserHeadersMiddleware:
    """Add CORS headers for allowed origins, answer preflights, add security headers.

    Runs on every answer, errors included (Falcon calls ``process_response``
    even when a handler or another middleware raised).
    """

    def __init__(self, settings: Settings) -> None:
        self._origins = frozenset(settings.cors_origins)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)
        if resp.get_header("Cache-Control") is None:
            resp.set_header("Cache-Control", cache_control(req, resp))
        if self._origins:
            self._add_cors(req, resp)

    def _add_cors(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The answer depends on Origin: a shared cache must not give one origin's to another.
        resp.append_header("Vary", "Origin")
        origin = req.get_header("Origin")
        if origin is None or origin.lower() not in self._origins:
            return
        resp.set_header("Access-Control-Allow-Origin", origin)
        is_preflight = (
            req.method == "OPTIONS"
            and req.get_header("Access-Control-Request-Method") is not None
            and resp.status_code < 400
        )
        if not is_preflight:
            resp.set_header("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS))
            return
        # Falcon's default OPTIONS responder names the route's methods in Allow.
        resp.set_header("Access-Control-Allow-Methods", resp.get_header("Allow") or "")
        resp.set_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS))
        resp.set_header("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_SECONDS))
        resp.status = falcon.HTTP_204
        resp.data = b""
