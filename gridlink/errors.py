"""Domain errors and the one error body every 4xx and 5xx answer carries.

Commands, queries and resources raise ``GridlinkError`` subclasses; the app
maps them (and Falcon's own HTTP errors) to
``{"error": {"type", "message", "fields"?}}`` in one place, so no answer ever
carries a stack trace, SQL or an internal id.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, ClassVar

import falcon
import orjson
import redis
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gridlink.db.failures import went_away

log = logging.getLogger(__name__)

# A client answered 429 or 503 is told to wait (Retry-After); the server
# (infra/workers.py) also reads nothing more from its keep-alive connection
# for a while, without holding a thread: a 429 for its Retry-After up to
# 5 s, a 503 for 1 s. A flood over kept-alive connections then costs a few
# requests per connection and second, not the server's cores.
SLOW_DOWN_SECONDS = {429: 5.0, 503: 1.0}
_slow_down = threading.local()


def take_slow_down() -> float:
    """Return (and clear) how long this thread's last answer asked its client to wait."""
    seconds: float = getattr(_slow_down, "seconds", 0.0)
    _slow_down.seconds = 0.0
    return seconds


FieldErrors = dict[str, list[str]]

# The largest request body the app reads (gridlink/web/http.py); answers and the
# OpenAPI document write it with ``kib``.
MAX_BODY_BYTES = 64 * 1024


def kib(size_bytes: int) -> str:
    """Write a size in KiB, as API.md does: ``kib(2048)`` is ``"2 KiB"``."""
    return f"{size_bytes / 1024:g} KiB"


class GridlinkError(Exception):
    """An error with an HTTP status and an API.md error type."""

    status: ClassVar[int] = 400
    type: ClassVar[str] = "invalid_request"
    default_message: ClassVar[str] = "The request is not valid."

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: FieldErrors | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.fields = fields
        self.headers = headers or {}


class InvalidRequest(GridlinkError):
    pass


class Unauthenticated(GridlinkError):
    status = 401
    type = "unauthenticated"
    default_message = "Authentication credentials were not provided or are not valid."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Token"})


class PermissionDenied(GridlinkError):
    status = 403
    type = "permission_denied"
    default_message = "You don't have permission to do that."


class NotFound(GridlinkError):
    status = 404
    type = "not_found"
    default_message = "Not found."


class RequestTimeout(GridlinkError):
    status = 408
    type = "request_timeout"
    default_message = "The request body did not arrive in time."


class Conflict(GridlinkError):
    status = 409
    type = "conflict"
    default_message = "The request conflicts with the current state."


class LimitReached(GridlinkError):
    status = 409
    type = "limit_reached"
    default_message = "A limit has been reached."


class PayloadTooLarge(GridlinkError):
    status = 413
    type = "payload_too_large"
    default_message = f"The request body is larger than {kib(MAX_BODY_BYTES)}."


class UnsupportedMediaType(GridlinkError):
    status = 415
    type = "unsupported_media_type"
    default_message = "The request body must be application/json."


class IdempotencyMismatch(GridlinkError):
    status = 422
    type = "idempotency_mismatch"
    default_message = "This Idempotency-Key was used with a different request body."


class RateLimited(GridlinkError):
    status = 429
    type = "rate_limited"
    default_message = "Too many attempts; try again later."

    def __init__(self, retry_after_seconds: int, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_seconds))})


class Unavailable(GridlinkError):
    status = 503
    type = "unavailable"
    default_message = "The service cannot take writes right now; try again shortly."

    def __init__(self, message: str | None = None, retry_after_seconds: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_seconds)})


# Falcon's own errors (routing, media, size) mapped onto API.md's types.
_FALCON_TYPES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}

_FALCON_MESSAGES = {
    404: "Not found.",
    405: "This method is not allowed here.",
    413: PayloadTooLarge.default_message,
    415: UnsupportedMediaType.default_message,
}


def error_types() -> list[str]:
    """List every error ``type`` an answer can carry, for the OpenAPI document."""
    types = {"internal_error", *_FALCON_TYPES.values()}
    pending = [GridlinkError]
    while pending:
        error_class = pending.pop()
        types.add(error_class.type)
        pending.extend(error_class.__subclasses__())
    return sorted(types)


def error_body(error_type: str, message: str, fields: FieldErrors | None = None) -> bytes:
    """Render the uniform error body of API.md."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if fields:
        error["fields"] = fields
    return orjson.dumps({"error": error})


def _render(resp: falcon.Response, status: int, body: bytes, headers: dict[str, str]) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = body
    for name, value in headers.items():
        resp.set_header(name, value)


def handle_gridlink_error(
    req: falcon.Request, resp: falcon.Response, ex: GridlinkError, params: dict[str, Any]
) -> None:
    if ex.status in SLOW_DOWN_SECONDS:
        retry_after = float(ex.headers.get("Retry-After", 1))
        _slow_down.seconds = min(retry_after, SLOW_DOWN_SECONDS[ex.status])
    _render(resp, ex.status, error_body(ex.type, ex.message, ex.fields), ex.headers)


def handle_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    status = ex.status_code
    error_type = _FALCON_TYPES.get(status, "invalid_request" if status < 500 else "internal_error")
    message = _FALCON_MESSAGES.get(status) or ex.description or ex.title
    headers = dict(ex.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Token")
    _render(resp, status, error_body(error_type, str(message)), headers)


def handle_unexpected_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    if went_away(ex):
        # A connection SQLAlchemy threw away: a server went away or was demoted.
        handle_backend_unreachable(req, resp, ex, params)
        return
    where = {"request_id": getattr(req.context, "request_id", None), "path": req.path}
    if isinstance(ex, DBAPIError):
        _log_database_error(ex, where)
    else:
        log.exception("unhandled error", extra=where)
    _render(
        resp,
        500,
        error_body("internal_error", "Something went wrong on our side; it has been logged."),
        {},
    )


def _log_database_error(ex: DBAPIError, where: dict[str, Any]) -> None:
    """Log a failed statement by its kind, SQL and stack, never by the database's message.

    The engines hide the parameters (``hide_parameters=True``), but PostgreSQL's
    own message quotes values too: the key that already exists, the text that
    is not a number, the statement line with the values in it.
    """
    code = getattr(ex.orig, "pgcode", None)
    stack = "".join(traceback.format_tb(ex.__traceback__))
    log.error(
        "unhandled database error %s (SQLSTATE %s) in: %s\n%s",
        type(ex.orig).__name__,
        code,
        ex.statement,
        stack,
        extra=where,
    )


def handle_backend_unreachable(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Answer 503 when a server the request needed is down or timed out."""
    log.warning(
        "backend unavailable: %s",
        type(ex).__name__,
        extra={"request_id": getattr(req.context, "request_id", None), "path": req.path},
    )
    handle_gridlink_error(req, resp, Unavailable(), params)


def add_error_handlers(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Register the handlers; the most specific class wins in Falcon."""
    app.add_error_handler(Exception, handle_unexpected_error)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(GridlinkError, handle_gridlink_error)
    # A lost, refused or timed-out connection to the primary (or Redis, where a
    # caller did not fall back) is a 503 with Retry-After, never a 500.
    for unreachable in (
        OperationalError,
        InterfaceError,
        redis.ConnectionError,
        redis.TimeoutError,
    ):
        app.add_error_handler(unreachable, handle_backend_unreachable)
