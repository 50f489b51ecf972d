"""Link input schemas (output is rendered by PostgreSQL, see gridlink.documents)."""

from __future__ import annotations

import re

from marshmallow import ValidationError, fields, validate

from gridlink.schemas.base import InputSchema, text_field

_HTTP_URL = fields.Url(schemes={"http", "https"}, require_tld=False)


def background(value: str) -> None:
    """Allow ``""``, a path starting with ``/``, or an http(s) URL."""
    if value == "" or (value.startswith("/") and not re.search(r"\s", value)):
        return
    try:
        _HTTP_URL.deserialize(value)
    except ValidationError:
        raise ValidationError("Must be empty, a path starting with /, or an http(s) URL.") from None


def url_field(**options: object) -> fields.Url:
    return fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
        **options,  # type: ignore[arg-type]
    )


def size_field() -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(1, 4))


def position_field() -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(0, 10000))


def slug_field(**options: object) -> fields.String:
    # Any string is accepted here: a malformed slug is simply not found (404).
    return fields.String(**options)  # type: ignore[arg-type]


class LinkIn(InputSchema):
    """``POST /api/links/``; ``position`` left out means after the grid's last link."""

    grid = slug_field(required=True)
    url = url_field(required=True)
    title = text_field(128, load_default="")
    background = text_field(512, background, load_default="")
    width = size_field()
    height = size_field()
    position = position_field()


class LinkPatch(InputSchema):
    """``PATCH /api/links/<slug>/``: any Link field but ``slug``."""

    grid = slug_field()
    url = url_field()
    title = text_field(128)
    background = text_field(512, background)
    width = size_field()
    height = size_field()
    position = position_field()
