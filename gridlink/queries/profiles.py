"""Read side of profiles: stored bytes from memory or the cache, else one key lookup."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, text

from gridlink.accounts.tokens import Principal
from gridlink.cache import CachedProfile
from gridlink.db.lsn import REPLICA_TIMELINE_SQL, Position, parse_position
from gridlink.queries.reader import CACHE, PRIMARY, Reader, ReadSource
from gridlink.services import Services
from gridlink.slugs import is_username

# A replica that turned out not to be in recovery (promoted since the router's
# probe) proves nothing about what the stream applied: no timeline matches 0.
UNPROVED = Position(0, 0)


@dataclass(frozen=True)
class StoredProfile:
    version: int
    document: bytes
    # The server's replay position before the read began; None from a server
    # not in recovery (and from the cache).
    replayed: Position | None = None


# Two statements, one round trip. A statement reads from the snapshot it takes
# as it starts, so a replay position read in the same statement may be past
# what the snapshot holds; read by the statement before, it never is. The first
# hands it to the second in a setting local to the transaction. It is read
# here rather than taken from the router's last probe (up to a second old): a
# fill is kept long only if its replica had replayed its lease (the stream's
# applied position when the miss was taken, gridlink.cache.profiles), which
# moves with every write anyone makes.
_BY_USERNAME = text(
    "SELECT set_config('gridlink.replayed', CASE WHEN pg_is_in_recovery() THEN"
    f" COALESCE({REPLICA_TIMELINE_SQL} || ':' || pg_last_wal_replay_lsn(), '')"
    " ELSE '' END, true);"
    " SELECT version, document, current_setting('gridlink.replayed') AS replayed"
    " FROM profile_documents WHERE lower(username) = lower(:username)"
)


def read_profile(connection: Connection, username: str) -> StoredProfile | None:
    """Return the user's profile document as stored bytes (one round trip), or None."""
    if not is_username(username):
        return None
    row = connection.execute(_BY_USERNAME, {"username": username}).one_or_none()
    if row is None:
        return None
    return StoredProfile(row.version, bytes(row.document), parse_position(row.replayed))


class Profiles:
    """Profile reads: memory, the cache (no query), else one query on a replica or the primary."""

    def __init__(self, services: Services, reader: Reader) -> None:
        self._cache = services.cache
        self._reader = reader
        self._metrics = services.metrics

    def find(
        self, username: str, principal: Principal | None
    ) -> tuple[StoredProfile | None, ReadSource]:
        """Return the profile (None: no such user) and where it came from."""
        if not is_username(username):
            # No account has it, and the cache folds case more loosely than the
            # rules (the Kelvin sign lowercases to "k"): answer before asking it.
            return None, PRIMARY
        anonymous = principal is None
        # Memory only for anonymous readers: one with a token may have just written.
        cached = self._cache.recall(username) if anonymous else None
        if cached is not None:
            self._metrics.observe_profile_lookup("memory")
            return _from_cache(cached), CACHE
        cached = self._cache.get_profile(username, remember=anonymous)
        self._metrics.observe_profile_lookup("miss" if cached is None else "hit")
        if cached is not None:
            return _from_cache(cached), CACHE
        with self._cache.fill(username) as fill:
            if fill.filled_by_another is not None:
                return _from_cache(fill.filled_by_another), CACHE
            stored, source = self._reader.read(principal, partial(read_profile, username=username))
            if stored is not None:
                position = None if source == PRIMARY else stored.replayed or UNPROVED
                fill.store(stored.version, stored.document, position)
            return stored, source


def _from_cache(cached: CachedProfile) -> StoredProfile | None:
    return None if cached.is_tombstone else StoredProfile(cached.version, cached.document)
