"""Yardsticks for throughput: Falcon apps that do (almost) nothing but answer.

``make bench`` serves them under the same gunicorn configuration as Gridlink:

- ``get_app()`` answers every GET with one constant body (``BENCH_CONSTANT_BODY``:
  a file the size of a seeded profile): Gridlink's requests per second over
  this one's is what all of Gridlink's own work costs;
- ``get_redis_app()`` answers ``/api/users/<name>/`` with one Redis ``HMGET``
  of that profile's cache entry and nothing else: the least a cached read
  through Redis can cost, so the gap to Gridlink is Gridlink's own code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import falcon

from gridlink.cache import ProfileCache
from gridlink.web.http import App


def _answer(resp: falcon.Response, body: bytes, version: bytes) -> None:
    """Answer like a cached profile read: the same bytes, type and kind of ETag."""
    resp.data = body
    resp.content_type = falcon.MEDIA_JSON
    resp.etag = version.decode()
    resp.set_header("X-Gridlink-Read-Source", "cache")


class ConstantBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def __call__(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        _answer(resp, self._body, b"1000000")


class OneRedisRead:
    def __init__(self, cache: ProfileCache) -> None:
        self._cache = cache

    def __call__(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        username = req.path.rstrip("/").rpartition("/")[2]
        key = self._cache.profile_key(username)
        version, document = cast(list[bytes | None], self._cache.client.hmget(key, ["v", "d"]))
        _answer(resp, document or b"{}", version or b"0")


def get_app() -> App:
    """Build the constant-body app around ``BENCH_CONSTANT_BODY`` (gunicorn calls this)."""
    app = falcon.App()
    app.add_sink(ConstantBody(Path(os.environ["BENCH_CONSTANT_BODY"]).read_bytes()), prefix="/")
    return app


def get_redis_app() -> App:
    """Build the one-HMGET app on ``GRIDLINK_REDIS_URL`` (gunicorn calls this)."""
    app = falcon.App()
    app.add_sink(OneRedisRead(ProfileCache(os.environ["GRIDLINK_REDIS_URL"], write_mark_ttl=1)))
    return app
