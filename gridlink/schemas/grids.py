"""Grid input schemas (output is rendered by PostgreSQL, see gridlink.documents)."""

from __future__ import annotations

from gridlink.schemas.base import InputSchema, text_field


class GridIn(InputSchema):
    """``POST /api/grids/``."""

    title = text_field(128, load_default="")


class GridPatch(InputSchema):
    """``PATCH /api/grids/<slug>/``."""

    title = text_field(128, required=True)
