"""``/api/links/``: a grid's links, the caller's links, one link, and the link commands."""

from __future__ import annotations

from functools import partial

import falcon

from gridlink.accounts.tokens import Principal
from gridlink.commands.links import change_link, create_link, soft_delete_link
from gridlink.commands.unit_of_work import run_command
from gridlink.errors import Unauthenticated
from gridlink.queries.links import list_grid_links, list_user_links, read_link
from gridlink.queries.reader import Reader
from gridlink.resources.params import idempotency_key, page_request
from gridlink.resources.responses import created_at, send_answer, send_read
from gridlink.schemas.base import NoBodyIn, load
from gridlink.schemas.links import LinkIn, LinkList, LinkOut, LinkPatch
from gridlink.services import Services
from gridlink.web.auth import Auth, authenticate
from gridlink.web.http import App, read_json_object, read_optional_json_object, send_json
from gridlink.web.idempotency import run_creating_command
from gridlink.web.openapi import GRID_SLUG, LINK_SLUG, Link, Operation, Reply, documented

_TAG = "links"
_BY_SLUG = {"slug": "$response.body#/slug"}
_NOT_OWNER = {403: "The link is not the caller's.", 404: "No such link."}
_GRID_FILTER = {
    "name": "grid",
    "in": "query",
    "description": "List this grid's links (for anyone); without it, the caller's links.",
    "schema": GRID_SLUG[0],
}


class Links:
    def __init__(self, services: Services, reader: Reader) -> None:
        self._services = services
        self._reader = reader

    @documented(
        Operation(
            "listLinks",
            "A grid's links (public), or the caller's links across all grids.",
            (Reply(200, "A page of links.", LinkList, headers=("X-Gridlink-Read-Source",)),),
            tag=_TAG,
            query=(_GRID_FILTER,),
            paged=True,
            errors={401: "No `grid` and no token.", 404: "No such grid."},
        )
    )
    @authenticate(Auth.OPTIONAL)
    def on_get(
        self, req: falcon.Request, resp: falcon.Response, principal: Principal | None
    ) -> None:
        """``?grid=<slug>``: that grid's links, for anyone; without it: the caller's links."""
        page = page_request(req)
        grid = req.get_param("grid")
        if grid is not None:
            query = partial(list_grid_links, grid_slug=grid, page=page)
        elif principal is None:
            # Checked after the page parameters: a bad one is a 400 with or without a token.
            raise Unauthenticated()
        else:
            query = partial(list_user_links, user_id=principal.user_id, page=page)
        body, source = self._reader.read(principal, query)
        send_read(resp, body, source)

    @documented(
        Operation(
            "createLink",
            "Add a link to one of the caller's grids.",
            (
                Reply(
                    201,
                    "The link.",
                    LinkOut,
                    headers=("Location", "Idempotent-Replayed"),
                    links={
                        "GetLink": Link("getLink", _BY_SLUG),
                        "ChangeLink": Link("changeLink", _BY_SLUG),
                        "DeleteLink": Link("deleteLink", _BY_SLUG),
                        "GetLinkGrid": Link("getGrid", {"slug": "$response.body#/grid"}),
                    },
                ),
            ),
            tag=_TAG,
            body=LinkIn,
            creates=True,
            errors={
                403: "The grid is not the caller's.",
                404: "No such grid.",
                409: "The grid holds as many links as allowed (`limit_reached`).",
            },
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_post(self, req: falcon.Request, resp: falcon.Response, principal: Principal) -> None:
        body = read_json_object(req)
        fields = load(LinkIn(), body)
        answer = run_creating_command(
            self._services,
            principal.user_id,
            idempotency_key(req, body),
            partial(create_link, user_id=principal.user_id, fields=fields),
            created_at("/api/links/"),
        )
        send_answer(resp, answer)

    @documented(
        Operation(
            "getLink",
            "One link.",
            (Reply(200, "The link.", LinkOut, headers=("X-Gridlink-Read-Source",)),),
            tag=_TAG,
            path={"slug": LINK_SLUG},
            errors={404: "No such link."},
        )
    )
    @authenticate(Auth.OPTIONAL)
    def on_get_item(
        self, req: falcon.Request, resp: falcon.Response, slug: str, principal: Principal | None
    ) -> None:
        body, source = self._reader.read(principal, partial(read_link, slug=slug))
        send_read(resp, body, source, "No such link.")

    @documented(
        Operation(
            "changeLink",
            "Change any field of a link but its slug; `grid` moves it to another of the caller's.",
            (Reply(200, "The link.", LinkOut),),
            tag=_TAG,
            path={"slug": LINK_SLUG},
            body=LinkPatch,
            errors=_NOT_OWNER,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_patch_item(
        self, req: falcon.Request, resp: falcon.Response, slug: str, principal: Principal
    ) -> None:
        changes = load(LinkPatch(), read_json_object(req))
        body = run_command(
            self._services,
            partial(change_link, user_id=principal.user_id, slug=slug, changes=changes),
        )
        send_json(resp, body)

    @documented(
        Operation(
            "deleteLink",
            "Delete a link (soft delete: gone from every read).",
            (Reply(204, "Deleted."),),
            tag=_TAG,
            path={"slug": LINK_SLUG},
            errors=_NOT_OWNER,
        )
    )
    @authenticate(Auth.REQUIRED)
    def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, slug: str, principal: Principal
    ) -> None:
        # A DELETE takes no fields: one sent is refused like on every other endpoint.
        load(NoBodyIn(), read_optional_json_object(req))
        run_command(self._services, partial(soft_delete_link, user_id=principal.user_id, slug=slug))
        resp.status = falcon.HTTP_204


def add_routes(app: App, services: Services) -> None:
    links = Links(services, Reader(services))
    app.add_route("/api/links", links)
    app.add_route("/api/links/{slug}", links, suffix="item")
