"""HTTP plumbing shared by every resource: request ids, body limits, JSON in and out,
and who the client is."""

from __future__ import annotations

import ipaddress
import random
import re
from typing import Any, TypeAlias

import falcon
import falcon.media
import orjson

from gridlink.accounts.events import Requester, bind_request
from gridlink.errors import (
    MAX_BODY_BYTES,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from gridlink.settings import UNIX_SOCKET_PEER, TrustedProxies

# The WSGI app type, as every ``add_routes`` takes it.
App: TypeAlias = "falcon.App[falcon.Request, falcon.Response]"

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def json_handlers() -> dict[str, falcon.media.BaseHandler]:
    handler = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    return {falcon.MEDIA_JSON: handler}


def request_id(given: str | None) -> str:
    """Return the client's request id if it is usable, else a new random one (32 hex digits).

    An id names a request in the logs; it is no secret. So it comes from
    ``random`` (reseeded in every forked worker) rather than ``secrets``, whose
    system call hands the worker's lock on the interpreter to its other threads
    on every request.
    """
    return given if given and _REQUEST_ID.match(given) else f"{random.getrandbits(128):032x}"


class RequestIdMiddleware:
    """Take ``X-Request-Id`` from the client (or make one) and echo it back.

    It also binds who asked (the client as the throttles count it, and the
    request id) for the security events the request may log
    (``gridlink.accounts.events``), and unbinds them when it is answered.
    Anonymous profile reads never get here (``GridlinkApp``): they log none.
    """

    def __init__(self, trusted_proxies: TrustedProxies) -> None:
        self._trusted_proxies = trusted_proxies

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-Id")
        req.context.request_id = request_id(given)
        resp.set_header("X-Request-Id", req.context.request_id)
        client = client_address(req, self._trusted_proxies)
        bind_request(Requester(client, req.context.request_id))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        bind_request(Requester())


class BodySizeMiddleware:
    """Refuse a body over ``MAX_BODY_BYTES`` from its Content-Length, before reading it."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise PayloadTooLarge()


class HeadLikeGet:
    """Answer ``HEAD`` wherever ``GET`` is served: the same status and headers, no body.

    The request is routed as a GET; the method is put back before the answer
    goes out, so Falcon drops the body (keeping its Content-Length) and the
    request is logged and counted as the HEAD it was.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method == "HEAD":
            req.context.head = True
            req.method = "GET"

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if req.context.get("head"):
            req.method = "HEAD"


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


IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
# An IPv6 client usually holds a whole /64: counting single addresses would let it
# step around every per-address limit.
_IPV6_CLIENT_PREFIX = 64


def client_address(req: falcon.Request, trusted_proxies: TrustedProxies) -> str:
    """Return the key of the client a per-address limit counts, never an empty one.

    The peer is the client unless it is a trusted proxy; then ``X-Forwarded-For``
    is read from the right, past every trusted proxy, to the first address that
    is not one. An entry that is no address ends the reading: the client is
    then the last trusted proxy read, as far as anyone trusted saw. IPv6
    clients are counted per /64. A unix-socket peer (no address) is counted as
    one client, ``unix``, unless trusted.
    """
    forwarded_for = req.get_header("X-Forwarded-For")
    return client_from(req.env.get("REMOTE_ADDR") or "", forwarded_for, trusted_proxies)


def client_from(peer: str, forwarded_for: str | None, trusted_proxies: TrustedProxies) -> str:
    """The client key, from the peer's address and its ``X-Forwarded-For`` (pure)."""
    peer_address = parse_address(peer)
    if not peer:
        peer_key, peer_trusted = UNIX_SOCKET_PEER, trusted_proxies.unix_socket
    elif peer_address is None:
        peer_key, peer_trusted = peer, False
    else:
        peer_key, peer_trusted = address_key(peer_address), peer_address in trusted_proxies
    if not peer_trusted or not forwarded_for:
        return peer_key
    # Each entry is what the hop to its right saw: only a trusted hop's word counts.
    nearest_trusted = peer_key
    for entry in reversed(forwarded_for.split(",")):
        hop = parse_address(entry)
        if hop is None:
            # Not an address: entries left of it were never checked by a trusted hop.
            return nearest_trusted
        if hop not in trusted_proxies:
            return address_key(hop)
        nearest_trusted = address_key(hop)
    # Every hop is a proxy of ours: the request started at the first of them.
    return nearest_trusted


def parse_address(text: str) -> IPAddress | None:
    """Read ``1.2.3.4``, ``1.2.3.4:port``, ``2001:db8::1`` or ``[2001:db8::1]:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(address: IPAddress) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 network."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{_IPV6_CLIENT_PREFIX}", strict=False))
