"""What creating commands return, for the caller to answer with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Created:
    """A new grid or link: its slug and its document (API JSON, rendered in the transaction)."""

    slug: str
    document: bytes
