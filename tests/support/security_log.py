"""Read the security events a test's ``log_lines`` captured."""

from __future__ import annotations

import io
from typing import Any

import orjson

from gridlink.accounts.events import SECURITY_LOGGER


def security_events(log_lines: io.StringIO, event: str) -> list[dict[str, Any]]:
    """Return every ``event`` line written on the security logger, in order."""
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    return [
        line for line in lines if line["logger"] == SECURITY_LOGGER and line.get("event") == event
    ]
