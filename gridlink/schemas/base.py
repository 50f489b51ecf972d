"""What every input schema shares: unknown fields refused, errors in API.md's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate

from gridlink.errors import InvalidRequest


def text_field(
    max_length: int, *validators: Callable[[str], None], **options: Any
) -> fields.String:
    """A string of at most ``max_length`` characters."""
    return fields.String(validate=[validate.Length(max=max_length), *validators], **options)


class InputSchema(Schema):
    """A request body schema: unknown fields, and NUL in any string, are errors."""

    class Meta:
        unknown = RAISE

    @pre_load
    def refuse_nul(self, body: Any, **kwargs: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refuse it in every field, here,
        # rather than let one field that reaches SQL fail with a 500.
        if isinstance(body, dict):
            bad = sorted(
                name for name, value in body.items() if isinstance(value, str) and "\x00" in value
            )
            if bad:
                raise ValidationError({name: ["Must not contain NUL characters."] for name in bad})
        return body


class NoBodyIn(InputSchema):
    """An endpoint that takes no fields: any field sent is unknown."""


def load(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """Validate ``body``; raise 400 ``invalid_request`` naming each bad field."""
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as error:
        raise InvalidRequest(
            "The request has invalid fields.", fields=_flatten(error.messages)
        ) from None
    return loaded


def _flatten(messages: dict[str, Any] | list[Any]) -> dict[str, list[str]]:
    if isinstance(messages, list):
        return {"_schema": [str(problem) for problem in messages]}
    flat: dict[str, list[str]] = {}
    for field, problems in messages.items():
        if isinstance(problems, dict):
            flat[field] = [str(p) for nested in problems.values() for p in nested]
        else:
            flat[field] = [str(p) for p in problems]
    return flat
