"""Where a read runs: a caught-up replica, else the primary, and the header that says so.

The rule for a read by a user who wrote recently (read your writes): only a
replica whose replay position has passed that user's last commit will do;
the position is remembered in Redis after each write. When Redis cannot say,
the read goes to the primary. Anonymous reads go to any replica in rotation.

A server that fails during the read is skipped for the next candidate, so a
replica that died since the router's last probe costs one retry, not a 5xx;
with the primary down, replicas still serve (possibly without the reader's
newest write, the best that can be done).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from gridlink.accounts.tokens import Principal
from gridlink.cache import CacheUnavailable
from gridlink.routing.router import Replica
from gridlink.services import Services

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ReadSource:
    """What ``X-Gridlink-Read-Source`` says: ``cache``, ``replica`` or ``primary``."""

    name: str


CACHE = ReadSource("cache")
REPLICA = ReadSource("replica")
PRIMARY = ReadSource("primary")

_UNREACHABLE = (OperationalError, InterfaceError)


class Reader:
    """Run read queries on the server the routing rules pick."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def read(
        self, reader: Principal | None, query: Callable[[Connection], T]
    ) -> tuple[T, ReadSource]:
        """Run ``query`` for ``reader`` (None: anonymous); return its result and source."""
        failure: Exception | None = None
        for engine, source in self._candidates(reader):
            try:
                with engine.connect() as connection:
                    return query(connection), source
            except _UNREACHABLE as error:
                log.warning("read failed on %s, trying the next server", source.name)
                failure = error
        assert failure is not None
        raise failure

    def _candidates(self, reader: Principal | None) -> Iterator[tuple[Engine, ReadSource]]:
        services = self._services
        chosen: Replica | None = None
        try:
            written = None if reader is None else services.cache.marks.last(reader.user_id)
        except CacheUnavailable:
            pass  # a recent write cannot be ruled out: the primary it is
        else:
            # A write on another timeline than the replica's may be on a lost
            # branch, or not: the router only hands out a replica of the same one.
            chosen = services.router.choose(written)
            if chosen is not None:
                yield chosen.engine, REPLICA
        yield services.primary, PRIMARY
        # The primary is down: any replica in rotation beats no answer.
        services.router.refresh_if_blind()
        fallback = services.router.choose()
        if fallback is not None and fallback != chosen:
            yield fallback.engine, REPLICA
