"""Read side of profiles: stored bytes from the cache, else one key lookup."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, text

from gridlink.accounts.tokens import Principal
from gridlink.cache import CachedProfile
from gridlink.queries.reader import CACHE, PRIMARY, Reader, ReadSource
from gridlink.services import Services
from gridlink.slugs import is_username


@dataclass(frozen=True)
class StoredProfile:
    version: int
    document: bytes


_BY_USERNAME = text(
    "SELECT version, document FROM profile_documents WHERE lower(username) = lower(:username)"
)


def read_profile(connection: Connection, username: str) -> StoredProfile | None:
    """Return the user's profile document as stored bytes (one query), or None."""
    if not is_username(username):
        return None
    row = connection.execute(_BY_USERNAME, {"username": username}).one_or_none()
    if row is None:
        return None
    return StoredProfile(version=row.version, document=bytes(row.document))


class Profiles:
    """Profile reads: the cache first (no query), then one query on a replica or the primary."""

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
        cached = self._cache.get_profile(username)
        self._metrics.observe_profile_lookup(hit=cached is not None)
        if cached is not None:
            return _from_cache(cached), CACHE
        with self._cache.fill(username) as fill:
            if fill.filled_by_another is not None:
                return _from_cache(fill.filled_by_another), CACHE
            stored, source, position = self._reader.read_with_position(
                principal, partial(read_profile, username=username)
            )
            if stored is not None:
                fill.store(stored.version, stored.document, position)
            return stored, source


def _from_cache(cached: CachedProfile) -> StoredProfile | None:
    return None if cached.is_tombstone else StoredProfile(cached.version, cached.document)
