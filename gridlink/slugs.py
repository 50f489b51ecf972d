"""Public ids: usernames, and ``gr_``, ``li_``, ``se_`` or ``id_`` with 128 random bits in hex."""

from __future__ import annotations

import re
import secrets

GRID_PREFIX = "gr_"
LINK_PREFIX = "li_"
# A login session (a token) as its owner sees it listed: never the token itself.
SESSION_PREFIX = "se_"
# An account's identity at an OpenID provider, as its owner sees it listed.
IDENTITY_PREFIX = "id_"
_SLUG = re.compile(r"^(gr|li|se|id)_[0-9a-f]{32}$")
# \Z, not $: "$" would let a trailing newline through.
USERNAME_PATTERN = r"\A[A-Za-z0-9_]{3,30}\Z"
_USERNAME = re.compile(USERNAME_PATTERN)
# The same rules as JSON Schema patterns (ECMA 262 has no \A or \Z), for the OpenAPI document.
USERNAME_JSON_PATTERN = "^[A-Za-z0-9_]{3,30}$"


def slug_json_pattern(prefix: str) -> str:
    return f"^{prefix}[0-9a-f]{{32}}$"


def new_slug(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def is_slug(value: str, prefix: str) -> bool:
    """Tell whether ``value`` is a well-formed slug with ``prefix`` (else it cannot exist)."""
    return value.startswith(prefix) and _SLUG.match(value) is not None


def is_username(value: str) -> bool:
    """Tell whether ``value`` has the form of a username (else no account has it)."""
    return _USERNAME.match(value) is not None
