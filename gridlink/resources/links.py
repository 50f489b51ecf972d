"""``/api/links/``: a grid's links, the caller's links, one link, and the link commands."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.auth import require_principal
from gridlink.commands.idempotency import run_creating_command
from gridlink.commands.links import change_link, create_link, soft_delete_link
from gridlink.commands.unit_of_work import run_command
from gridlink.http import App, read_json_object, read_optional_json_object, send_json
from gridlink.queries.links import list_grid_links, list_user_links, read_link
from gridlink.queries.reader import Reader
from gridlink.resources.params import idempotency_key, page_request
from gridlink.resources.responses import send_answer, send_read
from gridlink.schemas.base import NoBodyIn, load
from gridlink.schemas.links import LinkIn, LinkPatch
from gridlink.services import Services
from gridlink.tokens import Principal


class Links:
    def __init__(self, services: Services, reader: Reader) -> None:
        self._services = services
        self._reader = reader

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """``?grid=<slug>``: that grid's links, for anyone; without it: the caller's links."""
        page = page_request(req)
        grid = req.get_param("grid")
        principal: Principal | None
        if grid is not None:
            principal = req.context.principal
            query = partial(list_grid_links, grid_slug=grid, page=page)
        else:
            principal = require_principal(req)
            query = partial(list_user_links, user_id=principal.user_id, page=page)
        body, source = self._reader.read(principal, query)
        send_read(resp, body, source)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        body = read_json_object(req)
        fields = load(LinkIn(), body)
        answer = run_creating_command(
            self._services,
            principal.user_id,
            idempotency_key(req, body),
            partial(create_link, user_id=principal.user_id, fields=fields),
        )
        send_answer(resp, answer)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, slug: str) -> None:
        body, source = self._reader.read(req.context.principal, partial(read_link, slug=slug))
        send_read(resp, body, source, "No such link.")

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, slug: str) -> None:
        principal = require_principal(req)
        changes = load(LinkPatch(), read_json_object(req))
        body = run_command(
            self._services,
            partial(change_link, user_id=principal.user_id, slug=slug, changes=changes),
        )
        send_json(resp, body)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, slug: str) -> None:
        principal = require_principal(req)
        # A DELETE takes no fields: one sent is refused like on every other endpoint.
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(self._services, partial(soft_delete_link, user_id=principal.user_id, slug=slug))
        resp.status = falcon.HTTP_204


def add_routes(app: App, services: Services) -> None:
    links = Links(services, Reader(services))
    app.add_route("/api/links", links)
    app.add_route("/api/links/{slug}", links, suffix="item")
