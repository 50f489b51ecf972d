"""``/api/grids/``: the caller's grids, one grid, and the grid commands."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.auth import require_principal
from gridlink.commands.grids import create_grid, rename_grid, soft_delete_grid
from gridlink.commands.idempotency import run_creating_command
from gridlink.commands.unit_of_work import run_command
from gridlink.http import App, read_json_object, read_optional_json_object, send_json
from gridlink.queries.grids import list_grids, read_grid
from gridlink.queries.reader import Reader
from gridlink.resources.params import idempotency_key, page_request
from gridlink.resources.responses import send_answer, send_read
from gridlink.schemas.base import NoBodyIn, load
from gridlink.schemas.grids import GridIn, GridPatch
from gridlink.services import Services


class Grids:
    def __init__(self, services: Services, reader: Reader) -> None:
        self._services = services
        self._reader = reader

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        page = page_request(req)
        body, source = self._reader.read(
            principal, partial(list_grids, user_id=principal.user_id, page=page)
        )
        send_read(resp, body, source)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = require_principal(req)
        body = read_json_object(req)
        fields = load(GridIn(), body)
        answer = run_creating_command(
            self._services,
            principal.user_id,
            idempotency_key(req, body),
            partial(create_grid, user_id=principal.user_id, title=fields["title"]),
        )
        send_answer(resp, answer)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, slug: str) -> None:
        body, source = self._reader.read(req.context.principal, partial(read_grid, slug=slug))
        send_read(resp, body, source, "No such grid.")

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, slug: str) -> None:
        principal = require_principal(req)
        fields = load(GridPatch(), read_json_object(req))
        body = run_command(
            self._services,
            partial(rename_grid, user_id=principal.user_id, slug=slug, title=fields["title"]),
        )
        send_json(resp, body)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, slug: str) -> None:
        principal = require_principal(req)
        # A DELETE takes no fields: one sent is refused like on every other endpoint.
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(self._services, partial(soft_delete_grid, user_id=principal.user_id, slug=slug))
        resp.status = falcon.HTTP_204


def add_routes(app: App, services: Services) -> None:
    grids = Grids(services, Reader(services))
    app.add_route("/api/grids", grids)
    app.add_route("/api/grids/{slug}", grids, suffix="item")
