"""What the schemas share: unknown input fields refused, errors in API.md's shape,
and the output fields (times, slugs, usernames) the OpenAPI document describes."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate

from gridlink.errors import InvalidRequest
from gridlink.slugs import USERNAME_JSON_PATTERN, slug_json_pattern


def text_field(
    max_length: int, *validators: Callable[[str], None], **options: Any
) -> fields.String:
    """A string of at most ``max_length`` characters."""
    return fields.String(validate=[validate.Length(max=max_length), *validators], **options)


# Control characters (Unicode Cc) and the bidi controls that reorder what is
# shown around them: in a title or a URL they hide or disguise text, and JSON
# writes each control character as a six-byte escape.
HIDDEN_CHARACTERS = (
    "\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
)
_HIDDEN = re.compile(f"[{HIDDEN_CHARACTERS}]")


def is_secret_field(name: str) -> bool:
    """Passwords are any text: they are hashed, never shown, and must still log in."""
    return name.endswith("password")


class InputSchema(Schema):
    """A request body schema: unknown fields are errors, and so are NUL in any string
    and control or bidi characters in any string but a password."""

    class Meta:
        unknown = RAISE

    @pre_load
    def refuse_hidden_characters(self, body: Any, **kwargs: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refuse it in every field, here,
        # rather than let one field that reaches SQL fail with a 500.
        if not isinstance(body, dict):
            return body
        problems: dict[str, list[str]] = {}
        for name, value in body.items():
            if not isinstance(value, str):
                continue
            if "\x00" in value:
                problems[name] = ["Must not contain NUL characters."]
            elif not is_secret_field(name) and _HIDDEN.search(value):
                problems[name] = ["Must not contain control or bidirectional-override characters."]
        if problems:
            raise ValidationError(dict(sorted(problems.items())))
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


class Timestamp(fields.Field[datetime]):
    """An RFC 3339 UTC time with microseconds and ``Z``, as API.md writes every time."""

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def slug_out(prefix: str) -> fields.String:
    return fields.String(required=True, metadata={"pattern": slug_json_pattern(prefix)})


def username_out() -> fields.String:
    return fields.String(required=True, metadata={"pattern": USERNAME_JSON_PATTERN})
