"""The Falcon application: ``create_app(settings)``, and ``get_app()`` for gunicorn."""

from __future__ import annotations

import atexit
import os
from typing import Any

import falcon

from gridlink import resources
from gridlink.errors import add_error_handlers
from gridlink.queries.profiles import Profiles
from gridlink.queries.reader import Reader
from gridlink.resources.monitoring import scrape
from gridlink.resources.profiles import AnonymousProfileReads
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.web.auth import TokenAuthMiddleware
from gridlink.web.http import (
    App,
    BodySizeMiddleware,
    HeadLikeGet,
    RequestIdMiddleware,
    json_handlers,
)
from gridlink.web.metrics import InternalListener
from gridlink.web.observability import RequestObserver
from gridlink.web.security import BrowserHeadersMiddleware


class GridlinkApp(falcon.App):  # type: ignore[type-arg]
    """The Falcon app, with anonymous profile reads answered before Falcon's machinery.

    They are most of the traffic, and mostly one Redis read: building a
    Falcon request and response and running five middleware around that
    read would cost more than the read itself (bench/results.md).
    """

    def __init__(self, profile_reads: AnonymousProfileReads, **options: Any) -> None:
        super().__init__(**options)
        self._profile_reads = profile_reads

    def __call__(self, env: dict[str, Any], start_response: Any) -> Any:
        answered = self._profile_reads(env, start_response)
        return super().__call__(env, start_response) if answered is None else answered


def create_app(settings: Settings, services: Services | None = None) -> App:
    """Build the app around ``services`` (connected from ``settings`` when not given)."""
    services = services or Services.connect(settings)
    router = falcon.routing.CompiledRouter()
    observer = RequestObserver(services.metrics, router)
    browser_headers = BrowserHeadersMiddleware(settings)
    middleware: list[Any] = [
        observer,  # first: it times and logs every request
        HeadLikeGet(),
        browser_headers,
        RequestIdMiddleware(settings.trusted_proxies),
        BodySizeMiddleware(),
        TokenAuthMiddleware(services),
    ]
    profile_reads = AnonymousProfileReads(
        Profiles(services, Reader(services)), observer, browser_headers
    )
    app = GridlinkApp(profile_reads, middleware=middleware, router=router, cors_enable=False)
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


def get_app() -> Any:
    """Build the app from the environment (gunicorn calls this in each worker).

    With ``GRIDLINK_METRICS_BIND``, requests on that internal listener get
    ``/metrics`` alone, without a token (``InternalListener``).
    """
    settings = Settings.for_serving(os.environ)
    services = Services.connect(settings)
    # A worker that exits stops its probe thread and closes its pools.
    atexit.register(services.close)
    app = create_app(settings, services)
    if not settings.metrics_bind:
        return app
    return InternalListener(app, settings.metrics_bind, lambda: scrape(services))
