"""HTTP plumbing shared by every resource: request ids, body limits, JSON in and out."""

from __future__ import annotations

import re
import secrets
from typing import Any, TypeAlias

import falcon
import falcon.media
import orjson

from gridlink.errors import GridlinkError, InvalidRequest

# The WSGI app type, as every ``add_routes`` takes it.
App: TypeAlias = "falcon.App[falcon.Request, falcon.Response]"

MAX_BODY_BYTES = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class PayloadTooLarge(GridlinkError):
    status = 413
    type = "payload_too_large"
    default_message = "The request body is larger than 64 KiB."


class RequestTimeout(GridlinkError):
    status = 408
    type = "request_timeout"
    default_message = "The request body did not arrive in time."


class UnsupportedMediaType(GridlinkError):
    status = 415
    type = "unsupported_media_type"
    default_message = "The request body must be application/json."


def json_handlers() -> dict[str, falcon.media.BaseHandler]:
    handler = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    return {falcon.MEDIA_JSON: handler}


def request_id(given: str | None) -> str:
    """Return the client's request id if it is usable, else a new random one (32 hex digits)."""
    return given if given and _REQUEST_ID.match(given) else secrets.token_hex(16)


class RequestIdMiddleware:
    """Take ``X-Request-Id`` from the client (or make one) and echo it back."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-Id")
        req.context.request_id = request_id(given)
        resp.set_header("X-Request-Id", req.context.request_id)


class BodySizeMiddleware:
    """Refuse a body over 64 KiB from its Content-Length, before reading it."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise PayloadTooLarge()


def read_json_object(req: falcon.Request) -> dict[str, Any]:
    """Return the request body as a JSON object, or raise the 4xx API.md names."""
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != falcon.MEDIA_JSON:
        raise UnsupportedMediaType()
    # Read one byte past the limit: a chunked body has no Content-Length to check first.
    try:
        raw = _body_stream(req).read(MAX_BODY_BYTES + 1)
    except OSError:
        # Too slow for the server's read deadline (infra/workers.py), or gone.
        raise RequestTimeout() from None
    except Exception:
        # The server could not decode the framing (a malformed chunk, say).
        raise InvalidRequest("The request body is not well-formed HTTP.") from None
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _body_stream(req: falcon.Request) -> Any:
    """The body, however it is framed.

    Falcon bounds its ``bounded_stream`` by Content-Length, and to nothing
    without one, so a chunked body would read as empty. A server that ends
    the input itself (gunicorn decodes chunked bodies and sets
    ``wsgi.input_terminated``) is read as it is instead.
    """
    if req.content_length is None and req.env.get("wsgi.input_terminated"):
        return req.stream
    return req.bounded_stream


def read_optional_json_object(req: falcon.Request) -> dict[str, Any]:
    """Return the JSON object body, or ``{}`` if the request has no body at all.

    ``curl -X POST .../logout/`` sends neither a body nor a content type, and
    must not be told to send JSON.
    """
    if req.content_length == 0 or (req.content_length is None and req.content_type is None):
        return {}
    return read_json_object(req)


def send_json(resp: falcon.Response, body: bytes, status: int = 200) -> None:
    """Send ready JSON bytes as they are: no parse, no dump."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = body


def send_object(resp: falcon.Response, obj: Any, status: int = 200) -> None:
    send_json(resp, orjson.dumps(obj), status)
