"""What every infra driver shares: its one error type and its progress callback."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


class ClusterError(Exception):
    """Report a cluster problem in a sentence the user can act on."""


def silent(_line: str) -> None:
    """Swallow progress lines (single-server helpers used by tests)."""
