"""Monitoring as code: the alert rules, and the tools that check them."""

from __future__ import annotations

from pathlib import Path

from infra import binaries
from infra.errors import Progress

ALERT_RULES = Path(__file__).with_name("alerts.yml")


def promtool(progress: Progress = print) -> str:
    """Return promtool's path, installing Debian's ``prometheus`` package first if it is missing."""
    return binaries.program("promtool", "prometheus", progress)
