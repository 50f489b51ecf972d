"""Count what a request sends: SQL statements per engine, round trips to Redis per thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from redis.connection import AbstractConnection
from sqlalchemy import Engine, event


@dataclass
class QueryCount:
    statements: list[str]

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def count_queries(*engines: Engine) -> Iterator[QueryCount]:
    """Count the SQL statements sent on ``engines`` inside the block."""
    counted = QueryCount(statements=[])

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counted.statements.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield counted
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@contextmanager
def count_redis_round_trips() -> Iterator[list[str]]:
    """Record what this thread sends to any Redis inside the block, one entry per round trip.

    Only the calling thread's: the session's change relay and other
    background threads talk to the same Redis all the time, so a count of
    the server's commands would race with them. A falcon test client runs
    the request in the calling thread.
    """
    sent: list[str] = []
    me = threading.current_thread()
    original: Any = AbstractConnection.send_packed_command  # untyped in redis-py

    def send_packed_command(self: AbstractConnection, command: Any, *args: Any, **kw: Any) -> None:
        if threading.current_thread() is me:
            sent.append(repr(command)[:120])
        original(self, command, *args, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
        yield sent
