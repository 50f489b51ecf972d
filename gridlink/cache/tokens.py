"""Look up the caller behind a token, through a short-lived Redis cache.

Authenticated requests are hot, so a token check must not cost a database
round trip each time. The cache keeps one entry per token, under the token's
SHA-256 (never the token itself): either the caller (user, username, admin
flag, expiry) or a tombstone saying "not a valid token".

- **Issue**: sign-up and login write the new token's entry through after the
  commit, so the very next request is served from the cache whatever the
  replica lag (and a miss reads the primary anyway, see below). A promotion
  or demotion rewrites the entries of the user's live tokens the same way,
  except where a tombstone is already in place.
- **Miss**: read the primary, which is never behind an acknowledged
  revocation; when the primary cannot be reached, the first replica that
  answers (authentication goes on for reads while writes answer 503). A miss
  costs one keyed lookup per token per ``TOKEN_CACHE_SECONDS``. The answer,
  valid or not, is stored with ``SET NX``: a reader that looked before a
  revocation committed can never overwrite the tombstone the revocation wrote.
- **Revocation** (logout, logout-all, password change or reset, account
  deletion) writes tombstones after its commit, overwriting any entry: every
  server process refuses the token on its next request.
- **Bounded staleness**: keys live in the profile cache's keyspace, which
  carries the Redis server's ``run_id``: a Redis that restarts with old data
  (saved before a revocation it never heard of) serves none of it. And every
  entry lives at most ``TOKEN_CACHE_SECONDS`` (60 s), never past the token's
  expiry: if Redis is merely unreachable when a revocation commits and then
  answers again with the same data, the revoked token still works for at most
  that long after its entry was written; no longer.
- **Redis unreachable**: tokens are checked in the database alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
import redis
from sqlalchemy import Engine, Row, text
from sqlalchemy.exc import InterfaceError, OperationalError

from gridlink.accounts.tokens import Principal, hash_token
from gridlink.cache.lifetime import RedisLifetime, log_redis_unavailable
from gridlink.errors import Unauthenticated

TOKEN_CACHE_SECONDS = 60

_NOT_VALID = b"not-valid"

# KEYS[1]: the entry; ARGV: the not-valid marker, the caller, seconds to keep.
# A write-through may race a revocation of the same token (a promotion that
# read the token as live just before a logout): it must never undo the tombstone.
_STORE_UNLESS_REVOKED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

_LOOKUP = text(
    """
    SELECT u.id, u.username, u.is_admin, t.expires_on
    FROM auth_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = :token_hash AND t.revoked_on IS NULL AND t.expires_on > now()
    """
)


@dataclass(frozen=True)
class _CachedCaller:
    principal: Principal
    expires_at: float  # seconds since the epoch

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "user_id": self.principal.user_id,
                "username": self.principal.username,
                "is_admin": self.principal.is_admin,
                "expires_at": self.expires_at,
            }
        )

    @classmethod
    def decode(cls, token_hash: bytes, raw: bytes) -> _CachedCaller | None:
        if raw == _NOT_VALID:
            return None
        fields = orjson.loads(raw)
        principal = Principal(
            user_id=fields["user_id"],
            username=fields["username"],
            is_admin=fields["is_admin"],
            token_hash=token_hash,
        )
        return cls(principal, fields["expires_at"])

    def seconds_to_keep(self, now: float) -> int:
        return min(TOKEN_CACHE_SECONDS, math.ceil(self.expires_at - now))


class TokenCache:
    """The caller behind each token, cached in Redis in front of the database.

    ``primary`` answers a miss; ``replicas`` (every configured server's read
    engine) are tried in turn only when the primary cannot be reached.
    """

    def __init__(
        self, lifetime: RedisLifetime, primary: Engine, replicas: Sequence[Engine]
    ) -> None:
        self._lifetime = lifetime
        self._client = lifetime.client
        self._primary = primary
        self._replicas = tuple(replicas)

    def key(self, token_hash: bytes) -> str:
        """Name the cache entry of the token whose SHA-256 is ``token_hash``.

        Raise ``redis.RedisError`` if Redis cannot be reached to learn its keyspace.
        """
        return self._lifetime.key("token", token_hash.hex())

    def authenticate(self, token: str) -> Principal:
        """Return the user behind ``token``, or raise 401 if it is unknown, expired or revoked."""
        token_hash = hash_token(token)
        try:
            key = self.key(token_hash)
            # Bytes: the cache's client is built with decode_responses=False.
            raw = cast(bytes | None, self._client.get(key))
        except redis.RedisError as problem:
            log_redis_unavailable("token cache unreachable, checking the database", problem)
            caller = self._look_up(token_hash)
        else:
            if raw is not None:
                caller = _CachedCaller.decode(token_hash, raw)
            else:
                caller = self._look_up(token_hash)
                self._fill(key, caller)
        if caller is None or caller.expires_at <= time.time():
            raise Unauthenticated("The token is not valid.")
        return caller.principal

    def store(self, principal: Principal, expires_on: datetime) -> None:
        """Write a token's caller through to the cache (call after the commit that made it true)."""
        caller = _CachedCaller(principal, expires_on.timestamp())
        seconds = caller.seconds_to_keep(time.time())
        if seconds <= 0:
            return
        try:
            key = self.key(principal.token_hash)
            self._client.eval(_STORE_UNLESS_REVOKED, 1, key, _NOT_VALID, caller.encode(), seconds)
        except redis.RedisError as problem:
            log_redis_unavailable("token not cached; it will be read from the database", problem)

    def store_revoked(self, token_hashes: Iterable[bytes]) -> None:
        """Mark tokens as not valid in the cache (call after the commit that revoked them)."""
        token_hashes = list(token_hashes)
        if not token_hashes:
            return
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for token_hash in token_hashes:
                    pipe.set(self.key(token_hash), _NOT_VALID, ex=TOKEN_CACHE_SECONDS)
                pipe.execute()
        except redis.RedisError as problem:
            # The revocation is committed; a stale entry outlives it by at most
            # TOKEN_CACHE_SECONDS, the bound the module docstring promises.
            log_redis_unavailable("revoked tokens not marked in the cache", problem)

    def _look_up(self, token_hash: bytes) -> _CachedCaller | None:
        row = self._read_primary_first(token_hash)
        if row is None:
            return None
        principal = Principal(
            user_id=row.id, username=row.username, is_admin=row.is_admin, token_hash=token_hash
        )
        return _CachedCaller(principal, row.expires_on.timestamp())

    def _read_primary_first(self, token_hash: bytes) -> Row[Any] | None:
        """Read the token's row on the primary, or on a replica if the primary is unreachable."""
        try:
            return _read_token(self._primary, token_hash)
        except (OperationalError, InterfaceError) as primary_problem:
            for replica in self._replicas:
                try:
                    return _read_token(replica, token_hash)
                except (OperationalError, InterfaceError):
                    continue
            raise primary_problem from None

    def _fill(self, key: str, caller: _CachedCaller | None) -> None:
        if caller is None:
            raw, seconds = _NOT_VALID, TOKEN_CACHE_SECONDS
        else:
            raw, seconds = caller.encode(), caller.seconds_to_keep(time.time())
        if seconds <= 0:
            return
        try:
            # NX: never overwrite what a revocation (or an issue) wrote meanwhile.
            self._client.set(key, raw, ex=seconds, nx=True)
        except redis.RedisError as problem:
            log_redis_unavailable("token lookup not cached", problem)


def _read_token(engine: Engine, token_hash: bytes) -> Row[Any] | None:
    with engine.connect() as connection:
        return connection.execute(_LOOKUP, {"token_hash": token_hash}).one_or_none()
