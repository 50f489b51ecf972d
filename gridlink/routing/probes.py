"""Ask one database server what it is: role, WAL positions, timeline, replay age.

Every configured server gets the same probe, so the router learns the roles
from the servers themselves (``pg_is_in_recovery()``) rather than from a
fixed list: after a failover the promoted server answers as the primary and
the old one, rejoined, as a replica. Probes use their own small engines with
short timeouts, so a dead or cut-off server costs one deadline, not a hang.
``gridlink cluster status`` and staging's status (``infra/status.py``) send the
same query (``probe_with_cursor``), so the two views read the same facts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from gridlink.db.lsn import REPLICA_TIMELINE_SQL, parse_lsn
from gridlink.db.tcp import dead_peer_options

logger = logging.getLogger(__name__)

# A probe of a dead or blackholed server must not hold up the round: the
# server gives up on the statement after 500 ms, and the round stops waiting
# for any probe after PROBE_DEADLINE_SECONDS (libpq rounds connect_timeout
# up to 2 s, so the deadline, not connect_timeout, bounds a slow connect).
_CONNECT_TIMEOUT_SECONDS = 1
_STATEMENT_TIMEOUT_MS = 500
PROBE_DEADLINE_SECONDS = 0.8
# Drop an established connection whose peer stopped acknowledging, instead of
# waiting minutes for TCP to notice (statement_timeout is enforced server-side).
_TCP_USER_TIMEOUT_MS = 1000

# The timeline: a primary's is the one its current WAL file is named after; a
# replica's, REPLICA_TIMELINE_SQL's. The replay age is taken against
# clock_timestamp(), the moment the row is computed, not now(), the start of
# the transaction the query happens to run in.
_PROBE_SQL = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,"
    " pg_last_wal_receive_lsn()::text,"
    " pg_last_wal_replay_lsn()::text,"
    " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8,"
    f" CASE WHEN pg_is_in_recovery() THEN {REPLICA_TIMELINE_SQL}"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
    " END"
)
_PROBE = text(_PROBE_SQL)


@dataclass(frozen=True)
class ProbeFacts:
    """What one server said about itself in one probe."""

    in_recovery: bool
    timeline: int | None
    current_lsn: int | None  # a primary's WAL position (None on a replica)
    receive_lsn: int | None
    replay_lsn: int | None
    seconds_since_replayed_commit: float | None
    asked_at: float  # monotonic time just before the query was sent
    answered_at: float  # monotonic time the answer arrived


def _optional_lsn(lsn: str | None) -> int | None:
    return None if lsn is None else parse_lsn(lsn)


def probe(engine: Engine) -> ProbeFacts | None:
    """Ask one server for its facts; None if it cannot answer."""
    try:
        with engine.connect() as connection:
            asked_at = time.monotonic()
            row: tuple[Any, ...] = tuple(connection.execute(_PROBE).one())
            answered_at = time.monotonic()
    except SQLAlchemyError as problem:
        # Whatever went wrong, the next round starts from a fresh connection
        # rather than trusting the driver to have recognised a broken one.
        logger.debug("probe of %s failed: %s", engine.url.render_as_string(), problem)
        engine.dispose()
        return None
    return _facts(row, asked_at=asked_at, answered_at=answered_at)


def probe_with_cursor(cursor: Any) -> ProbeFacts:
    """Ask a server for its facts through a DB-API cursor of a connection already open.

    The driver's errors propagate: the caller owns the connection.
    """
    asked_at = time.monotonic()
    cursor.execute(_PROBE_SQL)
    row = cursor.fetchone()
    answered_at = time.monotonic()
    return _facts(row, asked_at=asked_at, answered_at=answered_at)


def _facts(row: Sequence[Any], *, asked_at: float, answered_at: float) -> ProbeFacts:
    in_recovery, current, receive, replay, since_commit, timeline = row
    return ProbeFacts(
        in_recovery=bool(in_recovery),
        timeline=None if timeline is None else int(timeline),
        current_lsn=_optional_lsn(current),
        receive_lsn=_optional_lsn(receive),
        replay_lsn=_optional_lsn(replay),
        seconds_since_replayed_commit=since_commit,
        asked_at=asked_at,
        answered_at=answered_at,
    )


def probe_engine(url: str) -> Engine:
    """Create an engine of one persistent connection with the probe's short timeouts."""
    return create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=PROBE_DEADLINE_SECONDS,
        isolation_level="AUTOCOMMIT",  # no BEGIN/ROLLBACK round trips around the probe
        hide_parameters=True,
        connect_args={
            "connect_timeout": _CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
            "application_name": "gridlink-router",
            **dead_peer_options(_TCP_USER_TIMEOUT_MS),
        },
    )


def host_of(url: str) -> str:
    """Return ``host:port`` of a single-host URL, never its password."""
    parsed = make_url(url)
    host = parsed.host or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parsed.port or 5432}"
