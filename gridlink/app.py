"""The Falcon application: ``create_app(settings)``, and ``get_app()`` for gunicorn."""

from __future__ import annotations

import atexit
import os
from typing import Any

import falcon

from gridlink import resources
from gridlink.auth import TokenAuthMiddleware
from gridlink.errors import add_error_handlers
from gridlink.http import App, BodySizeMiddleware, RequestIdMiddleware, json_handlers
from gridlink.observability import RequestObserver
from gridlink.security import BrowserHeadersMiddleware
from gridlink.services import Services
from gridlink.settings import Settings


def create_app(settings: Settings, services: Services | None = None) -> App:
    """Build the app around ``services`` (connected from ``settings`` when not given)."""
    services = services or Services.connect(settings)
    router = falcon.routing.CompiledRouter()
    middleware: list[Any] = [
        RequestObserver(services.metrics, router),  # first: it times and logs every request
        BrowserHeadersMiddleware(settings),
        RequestIdMiddleware(),
        BodySizeMiddleware(),
        TokenAuthMiddleware(services),
    ]
    app = falcon.App(middleware=middleware, router=router, cors_enable=False)
    # API.md writes every path with a trailing slash and serves it without one too.
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.media_handlers.update(json_handlers())
    app.resp_options.media_handlers.update(json_handlers())
    app.req_options.default_media_type = falcon.MEDIA_JSON
    app.resp_options.default_media_type = falcon.MEDIA_JSON
    add_error_handlers(app)
    resources.add_routes(app, services)
    # Deliver the outbox from this process too: what a process that died left is sent.
    services.mail.start()
    return app


def get_app() -> App:
    """Build the app from the environment (gunicorn calls this in each worker)."""
    settings = Settings.from_env(os.environ)
    services = Services.connect(settings)
    # A worker that exits stops its probe thread and closes its pools.
    atexit.register(services.close)
    return create_app(settings, services)
