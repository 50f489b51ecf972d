"""Link schemas: input (load) and output (documentation only).

Answers are rendered by PostgreSQL (gridlink.documents) and sent as stored
bytes; ``LinkOut`` and ``LinkList`` describe them in the OpenAPI document.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

from gridlink.schemas.base import InputSchema, Timestamp, slug_out, text_field
from gridlink.slugs import GRID_PREFIX, LINK_PREFIX

_HTTP_URL = fields.Url(schemes={"http", "https"}, require_tld=False)
# For the OpenAPI document: URLs the validator surely accepts (host labels, port, path).
HTTP_URL_JSON_PATTERN = (
    r"^https?://(?:[a-z0-9]{1,63}\.)*[a-z0-9]{2,63}(?::[0-9]{1,5})?(?:/[!-~]*)?$"
)


# A path of this server: "/" then anything but a second "/" or "\" (a browser
# reads "//host" and "/\host" as another host).
_LOCAL_PATH = re.compile(r"/(?![/\\])\S*\Z")
LOCAL_PATH_JSON_PATTERN = r"/(?:[!-.0-\[\]-~][!-~]*)?"


def plain_host(value: str) -> None:
    """Refuse a URL whose authority can mislead: user-info, or a host that is not
    ASCII or IDNA-encodable.

    ``https://google.com@evil.example/`` goes to evil.example.
    """
    authority = urlsplit(value)
    if "@" in authority.netloc or "\\" in authority.netloc:
        raise ValidationError("Must not have a user name or password before the host.")
    host = authority.hostname or ""
    if not host.isascii():
        try:
            host.encode("idna")
        except UnicodeError:
            raise ValidationError("The host must be ASCII or a valid international name.") from None


def background(value: str) -> None:
    """Allow ``""``, a path of this server (starting with one ``/``), or an http(s) URL."""
    if value == "" or _LOCAL_PATH.match(value):
        return
    try:
        _HTTP_URL.deserialize(value)
        plain_host(value)
    except ValidationError:
        raise ValidationError(
            "Must be empty, a path starting with a single /, or an http(s) URL."
        ) from None


def url_field(**options: object) -> fields.Url:
    return fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=[validate.Length(max=2048), plain_host],
        metadata={"format": "uri", "pattern": HTTP_URL_JSON_PATTERN},
        **options,  # type: ignore[arg-type]
    )


def background_field(**options: object) -> fields.String:
    return text_field(
        512,
        background,
        metadata={"pattern": f"^(?:{LOCAL_PATH_JSON_PATTERN}|{HTTP_URL_JSON_PATTERN[1:-1]})?$"},
        **options,
    )


class WholeNumber(fields.Integer):
    """A JSON integer: ``2`` or ``2.0`` (one number in JSON), never ``"2"``, ``true`` or ``2.5``."""

    def _validated(self, value: object) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._validated(value)


def size_field() -> fields.Integer:
    return WholeNumber(strict=True, validate=validate.Range(1, 4))


def position_field() -> fields.Integer:
    return WholeNumber(strict=True, validate=validate.Range(0, 10000))


def slug_field(**options: object) -> fields.String:
    # Any string is accepted here: a malformed slug is simply not found (404).
    return fields.String(**options)  # type: ignore[arg-type]


class LinkIn(InputSchema):
    """``POST /api/links/``; ``position`` left out means after the grid's last link."""

    grid = slug_field(required=True)
    url = url_field(required=True)
    title = text_field(128, load_default="")
    background = background_field(load_default="")
    width = size_field()
    height = size_field()
    position = position_field()


class LinkPatch(InputSchema):
    """``PATCH /api/links/<slug>/``: any Link field but ``slug``."""

    grid = slug_field()
    url = url_field()
    title = text_field(128)
    background = background_field()
    width = size_field()
    height = size_field()
    position = position_field()


class LinkOut(Schema):
    """The Link object of API.md."""

    slug = slug_out(LINK_PREFIX)
    grid = slug_out(GRID_PREFIX)
    title = text_field(128, required=True)
    url = fields.String(required=True, validate=validate.Length(max=2048))
    background = text_field(512, required=True)
    width = fields.Integer(required=True, validate=validate.Range(1, 4))
    height = fields.Integer(required=True, validate=validate.Range(1, 4))
    position = fields.Integer(required=True, validate=validate.Range(0, 10000))
    created_on = Timestamp(required=True)
    modified_on = Timestamp(required=True, allow_none=True)


class LinkList(Schema):
    """A page of links."""

    data = fields.List(fields.Nested(LinkOut), required=True)
    has_more = fields.Boolean(required=True)
