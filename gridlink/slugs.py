"""Public ids: ``gr_`` or ``li_`` and 128 random bits in lowercase hex."""

from __future__ import annotations

import re
import secrets

GRID_PREFIX = "gr_"
LINK_PREFIX = "li_"
_SLUG = re.compile(r"^(gr|li)_[0-9a-f]{32}$")


def new_slug(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def is_slug(value: str, prefix: str) -> bool:
    """Tell whether ``value`` is a well-formed slug with ``prefix`` (else it cannot exist)."""
    return value.startswith(prefix) and _SLUG.match(value) is not None
