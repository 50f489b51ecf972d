"""Count the SQL statements an engine sends, for tests that assert query counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
