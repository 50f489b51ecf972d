"""The Cache-Control each kind of answer gets."""

from __future__ import annotations

import falcon
import falcon.testing
import pytest

from gridlink.web.security import cache_control


def answer(method: str, status: int, headers: dict[str, str] | None = None) -> str:
    req = falcon.testing.create_req(method=method, path="/api/x", headers=headers)
    resp = falcon.Response()
    resp.status = status
    return cache_control(req, resp)


@pytest.mark.parametrize(
    ("method", "status", "headers", "expected"),
    [
        ("GET", 200, None, "no-cache"),
        ("GET", 304, None, "no-cache"),
        ("GET", 200, {"Authorization": "Token t"}, "private, no-cache"),
        ("GET", 404, None, "no-store"),
        ("GET", 401, {"Authorization": "Token t"}, "no-store"),
        ("POST", 201, {"Authorization": "Token t"}, "no-store"),
        ("POST", 200, None, "no-store"),
        ("DELETE", 204, {"Authorization": "Token t"}, "no-store"),
    ],
)
def test_reads_are_revalidated_and_errors_and_writes_never_stored(
    method: str, status: int, headers: dict[str, str] | None, expected: str
) -> None:
    assert answer(method, status, headers) == expected
