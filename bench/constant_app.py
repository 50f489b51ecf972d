"""A Falcon app that answers every GET with one constant body: the yardstick for throughput.

``make bench`` serves it under the same gunicorn configuration as Gridlink, with
a body the size of a seeded profile (``BENCH_CONSTANT_BODY``: a file), so the
ratio of the two apps' requests per second is what Gridlink's own work costs.
"""

from __future__ import annotations

import os
from pathlib import Path

import falcon

from gridlink.http import App


class ConstantBody:
    """Answer like a cached profile read: the same bytes, type and kind of ETag."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __call__(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        resp.data = self._body
        resp.content_type = falcon.MEDIA_JSON
        resp.etag = "1000000"
        resp.set_header("X-Gridlink-Read-Source", "cache")


def get_app() -> App:
    """Build the app around the body in ``BENCH_CONSTANT_BODY`` (gunicorn calls this)."""
    app = falcon.App()
    app.add_sink(ConstantBody(Path(os.environ["BENCH_CONSTANT_BODY"]).read_bytes()), prefix="/")
    return app
