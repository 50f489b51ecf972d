"""Count what a request sends: SQL statements per engine, round trips to Redis per thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.connection import AbstractConnection

from infra.diagnostics import QueryCount, count_queries

__all__ = ["QueryCount", "count_queries", "count_redis_round_trips"]


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
