"""The change stream: every committed profile change reaches Redis, whoever made it.

Commands write a row into ``profile_changes`` (a dirty set: one row per
username, the newest version) in the transaction of the change, and NOTIFY
``CHANNEL``. The relay (``gridlink relay``; ``gridlink serve`` supervises one)
drains it:

1. read the dirty rows, each joined with the user's current document (none:
   the account was retired, so a tombstone at the dirty row's version);
2. THEN read ``pg_current_wal_lsn()``: it is past the commit of every change
   the first read saw;
3. in ONE Redis transaction, store every document (store-if-newer,
   authoritative: each voids its profile's lease) and raise the applied
   position (``gl:<run_id>:stream:applied``) to that LSN, with a lifetime of
   ``POSITION_TTL_SECONDS`` that every loop renews, even an idle one: no key
   means no proof (the stream is down, or Redis lost its data), and fills
   from replicas are short again. The position is an upper bound of the
   commits of every change the stream has applied, so an empty batch leaves
   it where it is, except that a missing one starts at the current LSN, past
   anything applied before. A batch that changed profiles also records them,
   with the position it raised from (``gl:<run_id>:stream:recent``): that
   position bounds every *other* profile's changes, so a lease taken just
   after a batch, for a profile the batch did not change, asks a replica
   for less than the batch's own position (``gridlink.cache.profiles``);
4. delete the dirty rows it applied, unless a newer version arrived meanwhile.

A relay killed anywhere in this redoes the batch on its next start (stores
are idempotent). Exactly one relay runs at a time: each holds a session-level
advisory lock on the primary, others wait for it. Redis or the primary going
away is logged and retried with backoff; the relay never exits for it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from gridlink.cache.lifetime import log_redis_unavailable
from gridlink.cache.positions import (
    BEFORE_FIELD,
    applied_key,
    decode_position,
    encode_position,
    recent_key,
)
from gridlink.cache.profiles import ProfileCache
from gridlink.db.lsn import CURRENT_POSITION_SQL, Position, format_lsn, parse_lsn, position_from_row
from gridlink.db.urls import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "gridlink_profile_changes"
# pg_advisory_lock's key for "the relay": b"glrelay" as a number, unlikely to collide.
RELAY_LOCK_KEY = int.from_bytes(b"glrelay", "big")
POLL_SECONDS = 0.5
POSITION_TTL_SECONDS = 5
# A batch is one Redis MULTI: 200 documents of ~30 KB stay far inside the client timeout.
BATCH_SIZE = 200

# KEYS[1]: the applied position; KEYS[2]: the last batch's record (a hash).
# ARGV: the batch's position (24 hex digits), seconds to live, then the
# usernames the batch changed (none: an idle round). The position is raised as
# RAISE_POSITION raises it (an idle round only sets a missing one). A batch
# that changed profiles records them and the position it raised from, which
# bounds every other profile's changes (that of the batch itself when there
# was none: nothing then bounds what was applied before it).
ADVANCE = f"""
local before = redis.call('GET', KEYS[1])
local position = ARGV[1]
if before and (#ARGV == 2 or before > position) then
  position = before
end
redis.call('SET', KEYS[1], position, 'EX', ARGV[2])
if #ARGV > 2 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], '{BEFORE_FIELD}', before or position)
  for index = 3, #ARGV do
    redis.call('HSET', KEYS[2], ARGV[index], '1')
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
elseif before then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  redis.call('DEL', KEYS[2])
end
return position
"""
# Short: the cost of a retry is one connection attempt, and the stream is late meanwhile.
_MAX_BACKOFF_SECONDS = 1.0

# Written by the commands, in the transaction of each change (the upsert keeps
# the time of the oldest change not yet relayed: the stream's lag in seconds).
MARK_CHANGED = text(
    f"""
    INSERT INTO profile_changes (username_key, version)
    SELECT lower(:username), :version FROM pg_notify('{CHANNEL}', '')
    ON CONFLICT (username_key) DO UPDATE SET version = EXCLUDED.version
    """
)

# Written by `gridlink seed` for the users it made, in its transaction: their
# documents reach Redis through the relay too, so a tombstone left by an
# earlier account of the same name does not outlive the seed.
MARK_USERS_CHANGED = f"""
    INSERT INTO profile_changes (username_key, version)
    SELECT lower(username), version FROM profile_documents, pg_notify('{CHANNEL}', '')
    WHERE user_id = ANY(%s)
    ON CONFLICT (username_key) DO UPDATE SET version = EXCLUDED.version
"""

_DIRTY = """
    SELECT c.username_key, c.version, d.version, d.document
    FROM profile_changes c
    LEFT JOIN profile_documents d ON lower(d.username) = c.username_key
    ORDER BY c.changed_at
    LIMIT %s
"""
_FORGET_APPLIED = """
    DELETE FROM profile_changes c
    USING unnest(%s::text[], %s::bigint[]) AS applied(username_key, version)
    WHERE c.username_key = applied.username_key AND c.version <= applied.version
"""
_LAG = text(
    """
    SELECT pg_current_wal_lsn()::text,
           COALESCE(EXTRACT(EPOCH FROM now() - min(changed_at)), 0)::float8,
           count(*)
    FROM profile_changes
    """
)


class ChangeRelay:
    """Drain ``profile_changes`` into Redis; run ``tasks`` on every loop as well."""

    def __init__(
        self,
        database_url: str,
        cache: ProfileCache,
        *,
        tasks: Sequence[Callable[[], object]] = (),
        poll_seconds: float = POLL_SECONDS,
        position_ttl: int = POSITION_TTL_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._dsn = libpq_url(database_url)
        self._cache = cache
        self._tasks = tuple(tasks)
        self._poll_seconds = poll_seconds
        self._position_ttl = position_ttl
        self._batch_size = batch_size
        self._connection: Any = None
        self._advance = cache.client.register_script(ADVANCE)

    def run(self, stopping: threading.Event) -> None:
        """Relay until ``stopping`` is set; never end because a server went away."""
        backoff = 0.1
        try:
            while not stopping.is_set():
                try:
                    if not self._hold_the_stream(stopping):
                        continue
                    self._wait_for_changes()
                    while self.relay_once() == self._batch_size:
                        pass  # a backlog: drain it before waiting again
                    backoff = 0.1
                except (psycopg2.Error, OSError) as problem:
                    log.warning("change relay: primary unavailable (%s); retrying", problem)
                    self._disconnect()
                    stopping.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                except redis.RedisError as problem:
                    log_redis_unavailable("change relay", problem)
                    stopping.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                self._run_tasks()
        finally:
            self._disconnect()

    def drain(self) -> int:
        """Take the stream, relay every pending change, and let go; return how many.

        For tools that need the stream empty before they go on (the bench);
        fails when another relay holds the stream.
        """
        if not self._hold_the_stream(threading.Event()):
            raise RuntimeError("another change relay holds the stream")
        try:
            total = 0
            while count := self.relay_once():
                total += count
            return total
        finally:
            self._disconnect()

    def _hold_the_stream(self, stopping: threading.Event) -> bool:
        """Connect, take the relay lock and LISTEN; False (after a wait) if another relay has it."""
        if self._connection is not None:
            return True
        connection = psycopg2.connect(
            self._dsn,
            connect_timeout=2,
            application_name="gridlink-relay",
            options="-c statement_timeout=5000",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))
            (locked,) = cursor.fetchone()
            if not locked:
                connection.close()
                stopping.wait(1.0)  # another relay runs: wait to take over if it dies
                return False
            cursor.execute(f"LISTEN {CHANNEL}")
        self._connection = connection
        log.info("change relay: holding the stream")
        return True

    def _wait_for_changes(self) -> None:
        """Return when a change is notified, or after the poll interval."""
        connection = self._connection
        if not connection.notifies:
            select.select([connection], [], [], self._poll_seconds)
        connection.poll()
        connection.notifies.clear()

    def relay_once(self) -> int:
        """Relay one batch of changes (possibly none) and renew the position; return the count."""
        with self._connection.cursor() as cursor:
            cursor.execute(_DIRTY, (self._batch_size,))
            rows = cursor.fetchall()
            cursor.execute(CURRENT_POSITION_SQL)
            current, timeline = cursor.fetchone()
        documents = [
            # No document: the account was retired; a tombstone at the change's version.
            (key, version, b"") if document is None else (key, document_version, bytes(document))
            for key, version, document_version, document in rows
        ]
        self._apply(documents, position_from_row(current, timeline))
        if documents:
            with self._connection.cursor() as cursor:
                cursor.execute(
                    _FORGET_APPLIED,
                    ([key for key, _, _ in documents], [version for _, version, _ in documents]),
                )
        return len(documents)

    def _apply(self, documents: list[tuple[str, int, bytes]], position: Position) -> None:
        """Store the documents and raise the applied position, all or nothing."""
        keyspace = self._cache.keyspace()
        changed = [username.lower() for username, _, _ in documents]
        with self._cache.client.pipeline(transaction=True) as pipeline:
            self._cache.queue_stores(pipeline, documents)
            self._advance(
                keys=[applied_key(keyspace), recent_key(keyspace)],
                args=[encode_position(position), self._position_ttl, *changed],
                client=pipeline,
            )
            pipeline.execute()

    def _run_tasks(self) -> None:
        for task in self._tasks:
            try:
                task()
            except Exception:
                log.exception("change relay: a periodic task failed")

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg2.Error):
                connection.close()


@dataclass(frozen=True)
class StreamReport:
    """How far Redis is behind the primary's committed profile changes, and why if unknown."""

    status: str  # "ok", or why fills from replicas are short-lived now
    applied_lsn: str | None = None  # None: no position in Redis
    lag_bytes: int | None = None  # the primary's WAL position minus the applied one
    lag_seconds: float | None = None  # age of the oldest change not yet relayed; 0 when none
    pending_changes: int | None = None  # profiles changed and not yet relayed


def report_stream(primary: Engine, cache: ProfileCache) -> StreamReport:
    """Measure the stream's lag: one query on the primary, one Redis GET; never raises."""
    try:
        with primary.connect() as connection:
            row = connection.execute(_LAG).one()
    except SQLAlchemyError:
        return StreamReport("primary unreachable")
    current: str = row[0]
    seconds: float = row[1]
    pending: int = row[2]
    try:
        raw: Any = cache.client.get(applied_key(cache.keyspace()))
    except redis.RedisError:
        return StreamReport("redis unreachable", None, None, seconds, pending)
    applied = decode_position(raw)
    if applied is None:
        return StreamReport(
            "no applied position in redis: the relay is down or redis lost its data",
            None,
            None,
            seconds,
            pending,
        )
    lag_bytes = max(0, parse_lsn(current) - applied.lsn)
    return StreamReport("ok", format_lsn(applied.lsn), lag_bytes, seconds, pending)
