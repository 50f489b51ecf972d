"""A small HTTP client for talking to a running API: the tests, the benchmarks, the load tools.

An address is ``host:port`` (plain HTTP) or ``https://host:port``: TLS, the
server's certificate verified, its name or address included, against the
system's CAs and every CA given to ``trust`` (staging's own, which ``gridlink
staging`` and the tests hand over). Never without verification.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HTTPS = "https://"

_trusted: set[str] = set()  # the CAs' PEM text: a staging purged later leaves its file gone
_logins: dict[str, dict[str, str]] = {}
_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def trust(ca_certificate: Path) -> None:
    """Verify HTTPS servers against ``ca_certificate`` too, from now on, in this process."""
    global _context
    pem = ca_certificate.read_text()
    with _context_lock:
        if pem not in _trusted:
            _trusted.add(pem)
            _context = None


def tls_context() -> ssl.SSLContext:
    """Return the context every HTTPS connection of this process verifies servers with."""
    global _context
    with _context_lock:
        if _context is None:
            context = ssl.create_default_context()
            for pem in sorted(_trusted):
                context.load_verify_locations(cadata=pem)
            _context = context
        return _context


def connection(address: str, timeout: float) -> http.client.HTTPConnection:
    """Return an unopened connection to ``host:port`` or, TLS verified, ``https://host:port``."""
    if address.startswith(HTTPS):
        return http.client.HTTPSConnection(
            address.removeprefix(HTTPS), timeout=timeout, context=tls_context()
        )
    return http.client.HTTPConnection(address, timeout=timeout)


def remember_login(address: str, headers: Mapping[str, str]) -> None:
    """Send ``headers`` (an ``Authorization``) with every request to ``address`` that has none,
    from now on, in this process: what a client's netrc does."""
    _logins[address] = dict(headers)


def basic_auth(user: str, password: str) -> dict[str, str]:
    """Return the ``Authorization`` header of HTTP basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, headers (names in any case) and raw body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """Send one request to ``host:port`` or ``https://host:port``; return the whole answer."""
    sent = dict(headers or {})
    if not any(name.lower() == "authorization" for name in sent):
        sent.update(_logins.get(address, {}))
    opened = connection(address, timeout)
    try:
        opened.request(method, path, body, sent)
        response = opened.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        opened.close()


def api_request(
    address: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """Send one API request (``body`` as JSON, ``token`` as the caller); return the whole answer."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Token {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    return fetch(address, method, path, data, sent, timeout)


def json_body(reply: Reply) -> Any:
    """Return the answer's JSON body (None if empty; raw bytes if it is not JSON)."""
    content_type = reply.headers.get("Content-Type") or ""
    if reply.body and content_type.startswith("application/json"):
        return json.loads(reply.body)
    return reply.body or None
