"""``/api/grids/``: the caller's grids, one grid, and the grid commands."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.accounts.tokens import Principal
from gridlink.commands.grids import create_grid, rename_grid, soft_delete_grid
from gridlink.commands.unit_of_work import run_command
from gridlink.queries.grids import list_grids, read_grid
from gridlink.queries.reader import Reader
from gridlink.resources.params import idempotency_key, page_request
from gridlink.resources.responses import created_at, send_answer, send_read
from gridlink.schemas.base import NoBodyIn, load
from gridlink.schemas.grids import GridIn, GridList, GridOut, GridPatch
from gridlink.services import Services
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import App, read_json_object, read_optional_json_object, send_json
from gridlink.web.idempotency import run_creating_command
from gridlink.web.openapi import GRID_SLUG, Link, Operation, Reply, documented

_TAG = "grids"
_BY_SLUG = {"slug": "$response.body#/slug"}
_NOT_OWNER = {403: "The grid is not the caller's.", 404: "No such grid."}


class Grids:
    def __init__(self, services: Services, reader: Reader) -> None:
        self._services = services
        self._reader = reader

    @documented(
        Operation(
            "listGrids",
            "The caller's grids, in creation order.",
            (Reply(200, "A page of grids.", GridList, headers=("X-Gridlink-Read-Source",)),),
            tag=_TAG,
            paged=True,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_get(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        page = page_request(req)
        body, source = self._reader.read(
            principal, partial(list_grids, user_id=principal.user_id, page=page)
        )
        send_read(resp, body, source)

    @documented(
        Operation(
            "createGrid",
            "Create a grid.",
            (
                Reply(
                    201,
                    "The grid.",
                    GridOut,
                    headers=("Location", "Idempotent-Replayed"),
                    links={
                        "GetGrid": Link("getGrid", _BY_SLUG),
                        "RenameGrid": Link("renameGrid", _BY_SLUG),
                        "DeleteGrid": Link("deleteGrid", _BY_SLUG),
                        "ListGridLinks": Link("listLinks", {"grid": "$response.body#/slug"}),
                        "CreateLinkInGrid": Link(
                            "createLink",
                            request_body={
                                "grid": "$response.body#/slug",
                                "url": "https://example.com/",
                            },
                        ),
                    },
                ),
            ),
            tag=_TAG,
            body=GridIn,
            creates=True,
            errors={409: "The caller has as many grids as allowed (`limit_reached`)."},
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        body = read_json_object(req)
        fields = load(GridIn(), body)
        answer = run_creating_command(
            self._services,
            principal.user_id,
            idempotency_key(req, body),
            partial(create_grid, user_id=principal.user_id, title=fields["title"]),
            created_at("/api/grids/"),
        )
        send_answer(resp, answer)

    @documented(
        Operation(
            "getGrid",
            "One grid with its live links.",
            (Reply(200, "The grid.", GridOut, headers=("X-Gridlink-Read-Source",)),),
            tag=_TAG,
            path={"slug": GRID_SLUG},
            errors={404: "No such grid."},
        )
    )
    @authenticate(Auth.OPTIONAL)
    def on_get_item(
        self, req: falcon.Request, resp: falcon.Response, slug: str, principal: Principal | None
    ) -> None:
        body, source = self._reader.read(principal, partial(read_grid, slug=slug))
        send_read(resp, body, source, "No such grid.")

    @documented(
        Operation(
            "renameGrid",
            "Change a grid's title.",
            (Reply(200, "The grid.", GridOut),),
            tag=_TAG,
            path={"slug": GRID_SLUG},
            body=GridPatch,
            errors=_NOT_OWNER,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_patch_item(
        self, req: falcon.Request, resp: falcon.Response, slug: str, principal: Principal
    ) -> None:
        fields = load(GridPatch(), read_json_object(req))
        body = run_command(
            self._services,
            partial(rename_grid, user_id=principal.user_id, slug=slug, title=fields["title"]),
        )
        send_json(resp, body)

    @documented(
        Operation(
            "deleteGrid",
            "Delete a grid and its links (soft delete: gone from every read).",
            (Reply(204, "Deleted."),),
            tag=_TAG,
            path={"slug": GRID_SLUG},
            errors=_NOT_OWNER,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, slug: str, principal: Principal
    ) -> None:
        # A DELETE takes no fields: one sent is refused like on every other endpoint.
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(self._services, partial(soft_delete_grid, user_id=principal.user_id, slug=slug))
        resp.status = falcon.HTTP_204


def add_routes(app: App, services: Services) -> None:
    grids = Grids(services, Reader(services))
    app.add_route("/api/grids", grids)
    app.add_route("/api/grids/{slug}", grids, suffix="item")
