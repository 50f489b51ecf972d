"""``GET /api/openapi.json`` and ``GET /api/docs/``: the API described by itself.

The page is Swagger UI, served from the ``swagger-ui-bundle-v2`` package's
files by this app: it loads nothing from anywhere else, and its
Content-Security-Policy forbids the browser to.
"""

from __future__ import annotations

import threading

import falcon
from swagger_ui_bundle import swagger_ui_path

from gridlink.schemas.operations import OpenApiOut
from gridlink.web.http import App, send_json
from gridlink.web.openapi import Operation, Reply, document_bytes, documented
from gridlink.web.security import content_security_policy, inline_source

ASSETS_PREFIX = "/api/docs/assets"
_INITIALIZER = """
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
  });
};
"""

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Gridlink API</title>
<link rel="stylesheet" href="{ASSETS_PREFIX}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PREFIX}/swagger-ui-bundle.js"></script>
<script>{_INITIALIZER}</script>
</body>
</html>
""".encode()


class OpenApiDocument:
    """The document, built once from the app's routes on the first request."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._document: bytes | None = None
        self._lock = threading.Lock()

    def document(self) -> bytes:
        # Built on first use, not at mount time, so routes mounted after this one are in it.
        with self._lock:
            if self._document is None:
                self._document = document_bytes(self._app)
            return self._document

    @documented(
        Operation(
            "getOpenApi",
            "This document: every endpoint of the API, in OpenAPI 3.1.",
            (Reply(200, "The document.", OpenApiOut),),
            tag="documentation",
            uses_database=False,
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, self.document())


class DocsPage:
    def __init__(self) -> None:
        self._policy = content_security_policy(
            script_src=f"'self' {inline_source(_INITIALIZER.encode())}",
            # Swagger UI sets style attributes as it renders.
            style_src="'self' 'unsafe-inline'",
        )

    @documented(
        Operation(
            "getDocs",
            "A readable page of this document, served without any network access.",
            (Reply(200, "The page.", media_type=falcon.MEDIA_HTML),),
            tag="documentation",
            uses_database=False,
        )
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", self._policy)
        resp.data = _PAGE


def add_routes(app: App) -> None:
    app.add_route("/api/openapi.json", OpenApiDocument(app))
    app.add_route("/api/docs", DocsPage())
    # Static files are not routes: Falcon serves them when no route matches.
    app.add_static_route(ASSETS_PREFIX, str(swagger_ui_path))
