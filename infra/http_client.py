"""A small HTTP client for talking to a running API: the tests, the benchmarks, the load tools."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
    """Send one request to ``host:port`` and return the whole answer."""
    connection = http.client.HTTPConnection(address, timeout=timeout)
    try:
        connection.request(method, path, body, dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


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
