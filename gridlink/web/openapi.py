"""The OpenAPI 3.1 document, built from the app's route table and marshmallow schemas.

Every responder carries its own description (``@documented(Operation(...))``,
right above the code it describes) and what it requires of its caller
(``@authenticate(Auth...)``, gridlink/web/auth.py, which also enforces it).
``build_document(app)`` walks the app's router and describes each route it
serves from those, so a route without a description fails the build, and
nothing the app does not serve is listed. The errors each operation can answer
follow from what it takes: a body (400, 408, 413, 415), a token (401), an
Idempotency-Key (409, 422), a database (503); any request may be refused
before the app sees it (414, 431).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import falcon
import orjson
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from gridlink.errors import MAX_BODY_BYTES, kib
from gridlink.queries.pages import DEFAULT_LIMIT, MAX_LIMIT
from gridlink.schemas.base import HIDDEN_CHARACTERS, InputSchema, Timestamp, is_secret_field
from gridlink.schemas.errors import ErrorOut
from gridlink.slugs import GRID_PREFIX, LINK_PREFIX, USERNAME_JSON_PATTERN, slug_json_pattern
from gridlink.web.auth import Auth, required_auth
from gridlink.web.http import App

Responder = TypeVar("Responder", bound=Callable[..., None])

_ATTRIBUTE = "openapi_operation"


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: how an answer's values feed another operation."""

    operation_id: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    request_body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    """One success answer of an operation."""

    status: int
    description: str
    schema: type[Schema] | None = None
    # JSON with ``schema``, or no body at all; any other type is text.
    media_type: str = falcon.MEDIA_JSON
    headers: tuple[str, ...] = ()
    links: Mapping[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """What a responder does, as the OpenAPI document tells it."""

    operation_id: str
    summary: str
    replies: tuple[Reply, ...]
    tag: str
    # A request body: one schema, or several of which the body must be exactly one.
    body: type[Schema] | tuple[type[Schema], ...] | None = None
    body_required: bool = True
    # The route's {fields}, each with its JSON schema and meaning.
    path: Mapping[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    query: tuple[dict[str, Any], ...] = ()
    paged: bool = False
    creates: bool = False
    conditional: bool = False
    uses_database: bool = True
    # Further errors, by status: when they happen.
    errors: Mapping[int, str] = field(default_factory=dict)


def documented(operation: Operation) -> Callable[[Responder], Responder]:
    """Attach ``operation`` to a responder, for ``build_document``."""

    def attach(responder: Responder) -> Responder:
        setattr(responder, _ATTRIBUTE, operation)
        return responder

    return attach


# Operations are grouped by tag, in this order.
TAGS = {
    "accounts": "Sign-up, login, tokens, passwords and the caller's own account.",
    "profiles": "Public profiles: a user with every live grid and link.",
    "grids": "Grids, owned by users.",
    "links": "Links, owned by grids.",
    "operations": "Health, readiness, metrics and the replica router.",
    "documentation": "This document and its readable page.",
}

# Path parameters the resources share.
GRID_SLUG = ({"type": "string", "pattern": slug_json_pattern(GRID_PREFIX)}, "The grid's slug.")
LINK_SLUG = ({"type": "string", "pattern": slug_json_pattern(LINK_PREFIX)}, "The link's slug.")
USERNAME = (
    {"type": "string", "pattern": USERNAME_JSON_PATTERN},
    "A username, matched ignoring case.",
)

# Headers of answers, by name.
HEADERS: dict[str, dict[str, Any]] = {
    "Location": {
        "description": "Where the created object is read.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored first answer to the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "X-Gridlink-Read-Source": {
        "description": "Where the body came from.",
        "required": True,
        "schema": {"type": "string", "enum": ["cache", "replica", "primary"]},
    },
    "ETag": {
        "description": "The profile's version.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {
        "description": "Always `Token`.",
        "required": True,
        "schema": {"type": "string"},
    },
}

# The 403 of every admin-only operation, as the document words it.
NOT_AN_ADMIN = "The caller is not an administrator."

_ERROR_HEADERS = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}

_PAGE_PARAMETERS: tuple[dict[str, Any], ...] = (
    {
        "name": "limit",
        "in": "query",
        "description": f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
    {
        "name": "starting_after",
        "in": "query",
        "description": "The last slug of the previous page.",
        "schema": {"type": "string", "pattern": "^(gr|li)_[0-9a-f]{32}$"},
    },
)

_IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "Within 24 hours, the same key and body replay the first answer.",
    "schema": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,255}$"},
}

_IF_NONE_MATCH: dict[str, Any] = {
    "name": "If-None-Match",
    "in": "header",
    "description": "The ETag of a copy the client holds: 304 if it is still current.",
    "schema": {"type": "string"},
}


def served_routes(app: App) -> Iterator[tuple[str, str, Callable[..., Any]]]:
    """Yield ``(uri_template, method, responder)`` for each method each route implements.

    Falcon fills a route's other methods with its own 405 and OPTIONS
    responders; only the resource's own methods are served routes.
    """
    # Falcon has no public way to walk the routes; falcon.inspect reads _roots too.
    router: Any = app._router
    pending = list(router._roots)
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.resource is None or not node.method_map:
            continue
        for method, responder in sorted(node.method_map.items()):
            if inspect.ismethod(responder) and responder.__self__ is node.resource:
                yield node.uri_template, method, responder


def documented_path(uri_template: str) -> str:
    """Write the path as API.md does: with a trailing ``/`` under ``/api/`` but for files."""
    last_segment = uri_template.rsplit("/", 1)[-1]
    if uri_template.startswith("/api/") and "." not in last_segment:
        return uri_template + "/"
    return uri_template


def operations_of(app: App) -> dict[tuple[str, str], tuple[Operation, Auth]]:
    """Map each served ``(uri_template, method)`` to its description and what it requires."""
    described: dict[tuple[str, str], tuple[Operation, Auth]] = {}
    for uri_template, method, responder in served_routes(app):
        operation = getattr(responder, _ATTRIBUTE, None)
        if operation is None:
            raise LookupError(
                f"{method} {uri_template} has no OpenAPI description: "
                "decorate its responder with @documented(Operation(...))"
            )
        described[(uri_template, method)] = (operation, required_auth(responder))
    return described


def build_document(app: App) -> dict[str, Any]:
    """Describe every route of ``app`` as an OpenAPI 3.1 document."""
    spec = APISpec(
        title="Gridlink",
        version="1",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={
            "description": (
                "Grids of links: users own grids, grids own links, and anyone can read a "
                "user's profile. Every path is also served without its trailing slash. "
                'Errors are `{"error": {"type", "message", "fields"?}}`.'
            )
        },
    )
    marshmallow = spec.plugins[0]
    assert isinstance(marshmallow, MarshmallowPlugin)
    converter: Any = marshmallow.converter
    converter.map_to_openapi_type(Timestamp, "string", "date-time")
    converter.add_attribute_function(_no_hidden_characters_in_input)
    spec.components.security_scheme(
        "token",
        {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Authorization: Token <token>`, the token from sign-up or login.",
        },
    )
    for tag, description in TAGS.items():
        spec.tag({"name": tag, "description": description})
    spec.components.schema("Error", schema=ErrorOut)
    by_path: dict[str, dict[str, Any]] = {}
    for (uri_template, method), (operation, auth) in sorted(operations_of(app).items()):
        path = documented_path(uri_template)
        rendered = _render_operation(uri_template, operation, auth)
        by_path.setdefault(path, {})[method.lower()] = rendered
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def document_bytes(app: App) -> bytes:
    return orjson.dumps(build_document(app))


def _no_hidden_characters_in_input(
    converter: object, field: fields.Field[Any], **kwargs: Any
) -> dict[str, Any]:
    """Say which characters an input string may not hold (``InputSchema`` refuses them)."""
    if not isinstance(field, fields.String) or not isinstance(field.parent, InputSchema):
        return {}
    if is_secret_field(field.name or ""):
        return {"not": {"pattern": "\u0000"}}
    return {"not": {"pattern": f"[{HIDDEN_CHARACTERS}]"}}


def _schema_name(schema: type[Schema] | Schema) -> str:
    schema_class = schema if isinstance(schema, type) else type(schema)
    return schema_class.__name__.removesuffix("Out")


def _render_operation(uri_template: str, operation: Operation, auth: Auth) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "parameters": _parameters(uri_template, operation),
        "responses": {
            **{str(reply.status): _reply(reply) for reply in operation.replies},
            **{
                str(status): _error(status, when)
                for status, when in _errors(operation, auth).items()
            },
        },
    }
    if auth in (Auth.REQUIRED, Auth.ADMIN):
        rendered["security"] = [{"token": []}]
    elif auth is Auth.OPTIONAL:
        rendered["security"] = [{}, {"token": []}]
    if operation.body is not None:
        rendered["requestBody"] = {
            "required": operation.body_required,
            "content": {falcon.MEDIA_JSON: {"schema": _body_schema(operation.body)}},
        }
    if not rendered["parameters"]:
        del rendered["parameters"]
    return rendered


def _body_schema(body: type[Schema] | tuple[type[Schema], ...]) -> Any:
    return {"oneOf": list(body)} if isinstance(body, tuple) else body


def _parameters(uri_template: str, operation: Operation) -> list[Mapping[str, Any]]:
    fields = set(re.findall(r"{(\w+)}", uri_template))
    if fields != set(operation.path):
        raise LookupError(
            f"{operation.operation_id}: the route has {sorted(fields)} "
            f"but the description names {sorted(operation.path)}"
        )
    parameters: list[Mapping[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schema, "description": meaning}
        for name, (schema, meaning) in operation.path.items()
    ]
    parameters.extend(operation.query)
    if operation.paged:
        parameters.extend(_PAGE_PARAMETERS)
    if operation.creates:
        parameters.append(_IDEMPOTENCY_KEY)
    if operation.conditional:
        parameters.append(_IF_NONE_MATCH)
    return parameters


def _errors(operation: Operation, auth: Auth) -> dict[int, str]:
    """The error answers an operation can give: those its inputs imply, then its own."""
    errors: dict[int, str] = {}
    if operation.body is not None or operation.query or operation.paged or operation.creates:
        errors[400] = (
            "Invalid: bad JSON, a field that fails validation or is unknown (named in "
            "`fields`), or a bad query parameter or header."
        )
    if auth in (Auth.REQUIRED, Auth.ADMIN):
        errors[401] = "No token, or not a live one."
    else:
        errors[401] = "An Authorization header was sent but it names no live token."
    if auth is Auth.ADMIN:
        errors[403] = NOT_AN_ADMIN
    if operation.creates:
        errors[409] = "A request with this Idempotency-Key is still running."
        errors[422] = "This Idempotency-Key was used with a different body."
    if operation.body is not None:
        errors[408] = "The body did not arrive within the server's deadline."
        errors[413] = f"The body is over {kib(MAX_BODY_BYTES)}."
        errors[415] = "The body is not application/json."
    # The server refuses these before the app sees the request, on any path.
    errors[414] = "The request line is too long."
    errors[431] = "The request headers are too large."
    if operation.uses_database:
        errors[503] = "A server this request needs is unreachable; try again after Retry-After."
    for status, when in operation.errors.items():
        errors[status] = f"{errors[status]} Or: {when}" if status in errors else when
    return dict(sorted(errors.items()))


def _reply(reply: Reply) -> dict[str, Any]:
    rendered: dict[str, Any] = {"description": reply.description}
    if reply.schema is not None:
        rendered["content"] = {reply.media_type: {"schema": reply.schema}}
    elif reply.media_type != falcon.MEDIA_JSON:
        rendered["content"] = {reply.media_type: {"schema": {"type": "string"}}}
    if reply.headers:
        rendered["headers"] = {name: HEADERS[name] for name in reply.headers}
    if reply.links:
        rendered["links"] = {name: _link(link) for name, link in reply.links.items()}
    return rendered


def _error(status: int, when: str) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "description": when,
        "content": {falcon.MEDIA_JSON: {"schema": ErrorOut}},
    }
    if status in _ERROR_HEADERS:
        rendered["headers"] = {name: HEADERS[name] for name in _ERROR_HEADERS[status]}
    return rendered


def _link(link: Link) -> dict[str, Any]:
    rendered: dict[str, Any] = {"operationId": link.operation_id}
    if link.parameters:
        rendered["parameters"] = dict(link.parameters)
    if link.request_body is not None:
        rendered["requestBody"] = dict(link.request_body)
    return rendered
