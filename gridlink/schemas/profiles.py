"""The public Profile (documentation only: the profile is served as stored bytes)."""

from __future__ import annotations

from marshmallow import Schema, fields

from gridlink.schemas.base import Timestamp, text_field, username_out
from gridlink.schemas.grids import GridOut


class ProfileOut(Schema):
    """The Profile object of API.md: never an email, a token or a deleted object."""

    username = username_out()
    display_name = text_field(64, required=True)
    created_on = Timestamp(required=True)
    grids = fields.List(fields.Nested(GridOut), required=True)
