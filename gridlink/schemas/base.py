"""What every input schema shares: unknown fields refused, errors in API.md's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from gridlink.errors import InvalidRequest


def no_nul(value: str) -> None:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")


def text_field(
    max_length: int, *validators: Callable[[str], None], **options: Any
) -> fields.String:
    """A string of at most ``max_length`` characters, without NUL."""
    return fields.String(validate=[validate.Length(max=max_length), no_nul, *validators], **options)


class InputSchema(Schema):
    """A request body schema: a field the endpoint does not know is an error."""

    class Meta:
        unknown = RAISE


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
