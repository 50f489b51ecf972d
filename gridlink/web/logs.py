"""Structured logs: one JSON object per line, for every logger of the process.

gunicorn applies ``LOGGING`` in its master (``logconfig_dict`` in
``infra/gunicorn.conf.py``) and the workers inherit it. Nothing here runs at
import time, and nothing is configured in tests: there the ``gridlink``
loggers keep Python's defaults (warnings only, on stderr) and the request
lines stay silent unless a test captures them.

Every request writes a line, so that line has a path of its own
(``log_request``): a ``JsonLinesHandler`` takes its fields as they are and
writes the lines a batch at a time from a thread of its own. Building a
``LogRecord``, formatting it and writing it under the handler's lock cost a
cached read more than its Redis call, and the lock and the write, taken by
every one of a worker's threads, made them queue behind each other
(bench/results.md). Every other line is a ``LogRecord``, written at once.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from gridlink.web.batches import Batches

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
        # Six digits, zero-padded: those of a million more, without its leading 1
        # (cheaper than a format spec, once a line).
        return f"{prefix}.{str(1_000_000 + microseconds)[1:]}Z"


_SECONDS = _SecondsCache()


def render_line(
    created: float,
    level: str,
    logger: str,
    message: str,
    pid: int | None,
    fields: Mapping[str, Any],
) -> str:
    """Render one log line: time, level, logger, message, pid, then ``fields``."""
    line: dict[str, Any] = {
        "timestamp": _SECONDS.timestamp(created),
        "level": level,
        "logger": logger,
        "message": message,
        "pid": pid,
        **fields,
    }
    return orjson.dumps(line, default=str).decode()


def render_request_line(created: float, head: bytes, fields: Mapping[str, Any]) -> bytes:
    """Render a queued line as ``render_line`` does, in bytes, ``head`` rendered once a batch.

    ``head`` is ``request_line_head``'s; ``fields`` follow it as ``render_line``
    puts them, without a dictionary merged for every line (a request's fields
    never repeat the members before them).
    """
    body = orjson.dumps(fields, default=str)
    start = b'{"timestamp":"' + _SECONDS.timestamp(created).encode() + b'",' + head
    return start + b"}" if body == b"{}" else start + b"," + body[1:]


def request_line_head(level: str, logger: str, message: str, pid: int) -> bytes:
    """The members a queued line has after its timestamp: level, logger, message, pid."""
    return orjson.dumps({"level": level, "logger": logger, "message": message, "pid": pid})[1:-1]


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, logger, message, pid and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            name: value
            for name, value in record.__dict__.items()
            if name not in _STANDARD_ATTRIBUTES
        }
        if record.exc_info:
            # The traceback stays in the log, on the same line; never in an answer.
            fields["exception"] = self.formatException(record.exc_info)
        return render_line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            record.process,
            fields,
        )


# A request line waiting for the writer: when, the logger's name, the message, the fields.
_QueuedLine = tuple[float, str, str, Mapping[str, Any]]


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write JSON lines to a stream: records at once, request lines a batch at a time.

    Records are formatted and written as ``StreamHandler`` writes them. A
    request line (``log_request``) is only queued by the request's thread
    (``Batches``); a thread of this process renders the queue every
    ``BATCH_SECONDS`` and writes it in whole lines, at most
    ``select.PIPE_BUF`` bytes a write, so that lines of several processes
    sharing a pipe never interleave. A process killed outright loses its
    last ``BATCH_SECONDS`` of request lines; one that exits flushes them.
    """

    BATCH_SECONDS = 0.05

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        # ``emit`` flushes, so it drains holding the handler's lock: the batches
        # are applied under that lock too, never under a second one.
        self._lines: Batches[_QueuedLine] = Batches(
            self._write,
            interval=self.BATCH_SECONDS,
            name="log-writer",
            lock=self.lock,  # type: ignore[arg-type]
        )

    def queue_line(
        self, created: float, logger: str, message: str, fields: Mapping[str, Any]
    ) -> None:
        """Queue an INFO line for the writer thread."""
        self._lines.put((created, logger, message, fields))

    def flush(self) -> None:
        """Write every queued line, then flush the stream."""
        self._lines.drain()
        super().flush()

    def close(self) -> None:
        self._lines.close()
        super().close()

    def _write(self, queued: list[_QueuedLine]) -> None:
        pid = os.getpid()
        terminator = self.terminator.encode()
        heads: dict[tuple[str, str], bytes] = {}
        lines = []
        for created, logger, message, fields in queued:
            head = heads.get((logger, message))
            if head is None:
                head = heads[logger, message] = request_line_head("info", logger, message, pid)
            lines.append(render_request_line(created, head, fields) + terminator)
        # Under the handler's lock (``Batches`` holds it), as a record written at once is.
        for chunk in _chunks(lines, select.PIPE_BUF):
            self.stream.write(chunk.decode())
        self.stream.flush()


def _chunks(lines: list[bytes], limit: int) -> Iterator[bytes]:
    """Join ``lines`` into chunks of whole lines, at most ``limit`` bytes (a longer line alone)."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        yield b"".join(chunk)


def log_request(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """Log a request's line (message ``request``, at INFO) with ``fields``.

    What ``log_fields`` would write, to the same handlers: a
    ``JsonLinesHandler`` queues it, any other handler (a test's capture, say)
    gets a record.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    if logger.filters:
        log_fields(logger, "request", fields)
        return
    created = time.time()
    record: logging.LogRecord | None = None
    # The handlers a record of ``logger`` reaches, as ``Logger.callHandlers`` walks them.
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler.level > logging.INFO:
                continue
            if isinstance(handler, JsonLinesHandler) and not handler.filters:
                handler.queue_line(created, logger.name, "request", fields)
                continue
            if record is None:
                record = logger.makeRecord(
                    logger.name, logging.INFO, "", 0, "request", (), None, extra=fields
                )
                record.created = created
            handler.handle(record)
        current = current.parent if current.propagate else None


def _json_to_stderr(level: str) -> dict[str, Any]:
    return {"level": level, "handlers": ["json"], "propagate": False}


LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "json": {
            "class": "gridlink.web.logs.JsonLinesHandler",
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
