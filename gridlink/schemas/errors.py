"""The error body of API.md (documentation only: errors are rendered by gridlink.errors)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from gridlink.errors import error_types


class ErrorDetail(Schema):
    type = fields.String(required=True, validate=validate.OneOf(error_types()))
    message = fields.String(required=True)
    # Only for field-level problems: each bad field with its problems.
    field_problems = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String()), data_key="fields"
    )


class ErrorOut(Schema):
    """Every 4xx and 5xx answer: ``{"error": {"type", "message", "fields"?}}``."""

    error = fields.Nested(ErrorDetail, required=True)
