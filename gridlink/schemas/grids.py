"""Grid schemas: input (load) and output (documentation only).

Answers are rendered by PostgreSQL (gridlink.documents) and sent as stored
bytes; ``GridOut`` and ``GridList`` describe them in the OpenAPI document.
"""

from __future__ import annotations

from marshmallow import Schema, fields

from gridlink.schemas.base import InputSchema, Timestamp, slug_out, text_field, username_out
from gridlink.schemas.links import LinkOut
from gridlink.slugs import GRID_PREFIX


class GridIn(InputSchema):
    """``POST /api/grids/``."""

    title = text_field(128, load_default="")


class GridPatch(InputSchema):
    """``PATCH /api/grids/<slug>/``."""

    title = text_field(128, required=True)


class GridOut(Schema):
    """The Grid object of API.md: its live links in list order."""

    slug = slug_out(GRID_PREFIX)
    user = username_out()
    title = text_field(128, required=True)
    created_on = Timestamp(required=True)
    modified_on = Timestamp(required=True, allow_none=True)
    links = fields.List(fields.Nested(LinkOut), required=True)


class GridList(Schema):
    """A page of grids."""

    data = fields.List(fields.Nested(GridOut), required=True)
    has_more = fields.Boolean(required=True)
