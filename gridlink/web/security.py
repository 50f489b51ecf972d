"""What every answer tells browsers: CORS for the allowed origins, and security headers.

Clients authenticate with the ``Authorization`` header, never cookies, so CORS
never allows credentials: a page from an allowed origin can call the API with
a token it holds, and a page from any other origin gets no CORS headers at all
(the browser then keeps the answer from it). Nothing is allowed unless
``GRIDLINK_CORS_ORIGINS`` names exact origins.
"""

from __future__ import annotations

import base64
import hashlib
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
_EXPOSED = ", ".join(EXPOSED_HEADERS)
# How long a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE_SECONDS = 600

SECURITY_HEADERS = {
    # A JSON answer is never to be sniffed into HTML or script.
    "X-Content-Type-Options": "nosniff",
    # Nothing here is meant to be framed (clickjacking) or to leak its URL onward.
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def inline_source(body: bytes) -> str:
    """Return the CSP source that allows one inline script or style: its SHA-256."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"


def content_security_policy(*, script_src: str, style_src: str) -> str:
    """Allow the scripts and styles named, and nothing but this server for the rest."""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script_src}",
            f"style-src {style_src}",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def cache_control(req: falcon.Request, resp: falcon.Response) -> str:
    """Say how an answer may be cached, without breaking ``ETag`` revalidation."""
    return cache_control_for(
        req.method, resp.status_code, authorized=req.get_header("Authorization") is not None
    )


def cache_control_for(method: str, status: int, *, authorized: bool) -> str:
    """Say how an answer to ``method`` with ``status`` may be cached.

    Errors and answers to writes (which may carry a token) are never stored.
    Reads may be stored but must be revalidated every time (``no-cache``), so
    the ``ETag`` of a profile still saves the body while no cache serves a
    stale profile; answers to a token are for that client only (``private``).
    """
    if status >= 400 or method not in ("GET", "HEAD"):
        return "no-store"
    if authorized:
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
        resp.set_headers(SECURITY_HEADERS)
        if resp.get_header("Cache-Control") is None:
            resp.set_header("Cache-Control", cache_control(req, resp))
        if self._origins:
            self._add_cors(req, resp)

    def cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Return the CORS headers of an answer that is not a preflight's, to ``origin``."""
        if not self._origins:
            return []
        # The answer depends on Origin: a shared cache must not give one origin's to another.
        headers = [("Vary", "Origin")]
        if self.allows(origin):
            headers += [
                ("Access-Control-Allow-Origin", origin or ""),
                ("Access-Control-Expose-Headers", _EXPOSED),
            ]
        return headers

    def allows(self, origin: str | None) -> bool:
        return origin is not None and origin.lower() in self._origins

    def _add_cors(self, req: falcon.Request, resp: falcon.Response) -> None:
        origin = req.get_header("Origin")
        is_preflight = (
            req.method == "OPTIONS"
            and req.get_header("Access-Control-Request-Method") is not None
            and resp.status_code < 400
        )
        if not (is_preflight and self.allows(origin)):
            for name, value in self.cors_headers(origin):
                resp.append_header(name, value)  # Vary may name other headers already
            return
        resp.append_header("Vary", "Origin")
        resp.set_header("Access-Control-Allow-Origin", origin or "")
        # Falcon's default OPTIONS responder names the route's methods in Allow.
        resp.set_header("Access-Control-Allow-Methods", resp.get_header("Allow") or "")
        resp.set_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS))
        resp.set_header("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_SECONDS))
        resp.status = falcon.HTTP_204
        resp.data = b""
