"""Structured logs: one JSON object per line, for every logger of the process.

gunicorn applies ``LOGGING`` in its master (``logconfig_dict`` in
``infra/gunicorn.conf.py``) and the workers inherit it. Nothing here runs at
import time, and nothing is configured in tests: there the ``gridlink``
loggers keep Python's defaults (warnings only, on stderr) and the request
lines stay silent unless a test captures them.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

# The attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

REQUEST_LOGGER = "gridlink.requests"


def log_fields(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """Log ``message`` with ``fields`` at INFO, as ``logger.info(message, extra=fields)`` would.

    For the line written on every request: nothing is built when INFO is off,
    and the caller's frame is not looked up (no formatter here prints it).
    """
    if logger.isEnabledFor(logging.INFO):
        logger.handle(
            logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None, extra=fields)
        )


def utc_timestamp(moment: datetime) -> str:
    """Render ``moment`` as API.md's time: RFC 3339, UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _SecondsCache:
    """The RFC 3339 text of the current second, rendered once per second, not once per line."""

    def __init__(self) -> None:
        self._rendered = (-1, "")

    def timestamp(self, created: float) -> str:
        """Render ``created`` (seconds since the epoch) as ``utc_timestamp`` does."""
        second = int(created)
        cached_second, prefix = self._rendered  # one tuple: threads never see half of it
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._rendered = (second, prefix)
        microseconds = min(999_999, round((created - second) * 1_000_000))
        return f"{prefix}.{microseconds:06d}Z"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, logger, message, pid and the extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seconds = _SecondsCache()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": self._seconds.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES:
                line[name] = value
        if record.exc_info:
            # The traceback stays in the log, on the same line; never in an answer.
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def _json_to_stderr(level: str) -> dict[str, Any]:
    return {"level": level, "handlers": ["json"], "propagate": False}


LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "json": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "WARNING", "handlers": ["json"]},
    "loggers": {
        "gridlink": _json_to_stderr("INFO"),
        "gunicorn.error": _json_to_stderr("INFO"),
        "gunicorn.access": _json_to_stderr("INFO"),
    },
}
