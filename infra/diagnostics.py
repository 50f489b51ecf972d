"""What tests and benchmarks both measure or wait for: statements sent, a replica caught up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from gridlink.db.lsn import current_position, parse_lsn
from gridlink.services import Services


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


def wait_for_replica(services: Services, timeout: float = 15) -> None:
    """Wait until replica1 has replayed everything the primary has now, and the router knows."""
    with services.primary.connect() as connection:
        target = current_position(connection)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with services.replicas[0].connect() as connection:
                replayed: str | None = connection.execute(
                    text("SELECT pg_last_wal_replay_lsn()::text")
                ).scalar_one()
            if replayed is not None and parse_lsn(replayed) >= target.lsn:
                services.router.refresh()
                chosen = services.router.choose(target)
                if chosen is not None and chosen.name == "replica1":
                    return
        except OperationalError:  # the replica may still be starting
            services.router.refresh()
        time.sleep(0.1)
    raise AssertionError("replica1 did not catch up in time")
