"""Look up the caller behind a token, through a short-lived Redis cache.

Authenticated requests are hot, so a token check must not cost a database
round trip each time. The cache keeps one entry per token, under the token's
SHA-256 (never the token itself): either the caller (user, username, admin
flag, expiry, last use on record) or a tombstone saying "not a valid token".

- **Shape first**: a string that ``new_token`` cannot have made is refused
  before Redis is asked, so random strings cost no cache entry.
- **Issue**: sign-up and login write the new token's entry through after the
  commit, so the very next request is served from the cache whatever the
  replica lag (and a miss reads the primary anyway, see below).
- **Miss**: read the primary, which is never behind an acknowledged
  revocation; when the primary cannot be reached, the first replica that
  answers (authentication goes on for reads while writes answer 503). A miss
  costs one keyed lookup per token per ``TOKEN_CACHE_SECONDS``. The answer,
  valid or not, is stored with ``SET NX``: a reader that looked before a
  revocation committed can never overwrite the tombstone the revocation wrote.
- **Revocation** (logout, logout-all, a session ended, password change or
  reset, a confirmed email change, promotion or demotion, account deletion)
  writes tombstones after its commit, overwriting any entry: every server
  process refuses the token on its next request.
- **Lifetimes**: a token ends at its ``expires_on`` (set at issue: an admin's
  is shorter) or once unused for the idle lifetime, whichever comes first;
  both are checked against the injected ``clock``, in the cache and after a
  lookup alike. The last use is recorded at most once an hour
  (``gridlink.cache.token_use``), so the idle end is exact to the hour.
- **Bounded staleness**: keys live in the profile cache's keyspace, which
  carries the Redis server's ``run_id``: a Redis that restarts with old data
  (saved before a revocation it never heard of) serves none of it. And every
  entry lives at most ``TOKEN_CACHE_SECONDS`` (60 s), never past the token's
  end: if Redis is merely unreachable when a revocation commits and then
  answers again with the same data, the revoked token still works for at most
  that long after its entry was written; no longer.
- **Sealed**: a caller's entry carries an HMAC under the server's keys, bound
  to the token's hash (``gridlink.accounts.seals``). One that fails to open (written
  by hand into Redis, copied from another token, or sealed with a retired key)
  is a miss: the database decides, and the entry is replaced unless it changed
  meanwhile. The tombstone is not sealed: it grants nothing.
- **Redis unreachable**: tokens are checked in the database alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
import redis
from sqlalchemy import Engine, Row, text
from sqlalchemy.exc import InterfaceError, OperationalError

from gridlink.accounts.events import security_event
from gridlink.accounts.seals import Seal
from gridlink.accounts.tokens import Principal, hash_token, is_token_form
from gridlink.cache.lifetime import RedisLifetime, log_redis_unavailable
from gridlink.cache.token_use import UseRecorder
from gridlink.errors import Unauthenticated

TOKEN_CACHE_SECONDS = 60

_NOT_VALID = b"not-valid"

# KEYS[1]: the entry; ARGV: the not-valid marker, the caller, seconds to keep.
# A write-through may race a revocation of the same token (a logout-all that
# committed between a login's commit and its write-through): it must never
# undo the tombstone.
_STORE_UNLESS_REVOKED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS[1]: the entry; ARGV: the entry that failed its seal, the caller, seconds to keep.
# Replaces a forged entry unless something (a revocation's tombstone) replaced it first.
_REPLACE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

# No time condition here: the lifetimes are checked against the injected clock.
_LOOKUP = text(
    """
    SELECT u.id, u.username, u.is_admin, t.expires_on, t.last_used_on
    FROM auth_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = :token_hash AND t.revoked_on IS NULL
    """
)


@dataclass(frozen=True)
class _CachedCaller:
    principal: Principal
    expires_at: float  # seconds since the epoch
    last_used_at: float  # as recorded: at most USE_RECORD_SECONDS behind the last use

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "user_id": self.principal.user_id,
                "username": self.principal.username,
                "is_admin": self.principal.is_admin,
                "expires_at": self.expires_at,
                "last_used_at": self.last_used_at,
            }
        )

    @classmethod
    def decode(cls, token_hash: bytes, raw: bytes, now: float) -> _CachedCaller:
        fields = orjson.loads(raw)
        principal = Principal(
            user_id=fields["user_id"],
            username=fields["username"],
            is_admin=fields["is_admin"],
            token_hash=token_hash,
        )
        # An entry the previous release wrote (a rolling deploy) has no last use:
        # it was read from the database within the minute, take it as used now.
        return cls(principal, fields["expires_at"], fields.get("last_used_at", now))

    def ends_at(self, idle_seconds: float) -> float:
        """When the token ends: its lifetime, or its idle lifetime, whichever comes first."""
        return min(self.expires_at, self.last_used_at + idle_seconds)

    def seconds_to_keep(self, now: float, idle_seconds: float) -> int:
        return min(TOKEN_CACHE_SECONDS, math.ceil(self.ends_at(idle_seconds) - now))


class TokenCache:
    """The caller behind each token, cached in Redis in front of the database.

    ``primary`` answers a miss; ``replicas`` (every configured server's read
    engine) are tried in turn only when the primary cannot be reached. A
    token unused for ``idle_days`` ends; ``clock`` (seconds since the epoch)
    is what every lifetime is checked against.
    """

    def __init__(
        self,
        lifetime: RedisLifetime,
        primary: Engine,
        replicas: Sequence[Engine],
        *,
        idle_days: float,
        seal: Seal,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifetime = lifetime
        self._client = lifetime.client
        self._primary = primary
        self._replicas = tuple(replicas)
        self._idle_seconds = idle_days * 86400
        self.seal = seal
        self._clock = clock
        self._uses = UseRecorder(lifetime, primary)

    def key(self, token_hash: bytes) -> str:
        """Name the cache entry of the token whose SHA-256 is ``token_hash``.

        Raise ``redis.RedisError`` if Redis cannot be reached to learn its keyspace.
        """
        return self._lifetime.key("token", token_hash.hex())

    def authenticate(self, token: str) -> Principal:
        """Return the user behind ``token``, or raise 401 if it is unknown, ended or revoked.

        A use is recorded when the one on record is an hour old (``token_use``).
        """
        if not is_token_form(token):
            raise Unauthenticated("The token is not valid.")
        token_hash = hash_token(token)
        now = self._clock()
        caller = self._caller(token_hash, now)
        if caller is None or caller.ends_at(self._idle_seconds) <= now:
            raise Unauthenticated("The token is not valid.")
        if self._uses.is_due(caller.last_used_at, now):
            self._uses.record(token_hash, now)
        return caller.principal

    def store(self, principal: Principal, expires_on: datetime, last_used_on: datetime) -> None:
        """Write a token's caller through to the cache (call after the commit that made it true)."""
        caller = _CachedCaller(principal, expires_on.timestamp(), last_used_on.timestamp())
        seconds = caller.seconds_to_keep(self._clock(), self._idle_seconds)
        if seconds <= 0:
            return
        try:
            key = self.key(principal.token_hash)
            sealed = self.seal.seal(principal.token_hash, caller.encode())
            self._client.eval(_STORE_UNLESS_REVOKED, 1, key, _NOT_VALID, sealed, seconds)
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

    def _caller(self, token_hash: bytes, now: float) -> _CachedCaller | None:
        """Return the token's caller from the cache, else from the database (then cached)."""
        try:
            key = self.key(token_hash)
            # Bytes: the cache's client is built with decode_responses=False.
            raw = cast(bytes | None, self._client.get(key))
        except redis.RedisError as problem:
            log_redis_unavailable("token cache unreachable, checking the database", problem)
            return self._look_up(token_hash)
        if raw == _NOT_VALID:
            return None
        if raw is not None:
            payload = self.seal.open(token_hash, raw)
            if payload is not None:
                return _CachedCaller.decode(token_hash, payload, now)
            security_event("token_cache_forged", user_id=None)
        caller = self._look_up(token_hash)
        self._fill(key, caller, now, replacing=raw)
        return caller

    def _look_up(self, token_hash: bytes) -> _CachedCaller | None:
        row = self._read_primary_first(token_hash)
        if row is None:
            return None
        principal = Principal(
            user_id=row.id, username=row.username, is_admin=row.is_admin, token_hash=token_hash
        )
        return _CachedCaller(principal, row.expires_on.timestamp(), row.last_used_on.timestamp())

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

    def _fill(
        self, key: str, caller: _CachedCaller | None, now: float, replacing: bytes | None
    ) -> None:
        """Cache what the database said: in a free entry, or over the unsealed ``replacing``."""
        if caller is None or caller.ends_at(self._idle_seconds) <= now:
            # Unknown, revoked or ended: time only moves on, so it stays not valid.
            raw, seconds = _NOT_VALID, TOKEN_CACHE_SECONDS
        else:
            sealed = self.seal.seal(caller.principal.token_hash, caller.encode())
            raw, seconds = sealed, caller.seconds_to_keep(now, self._idle_seconds)
        try:
            if replacing is None:
                # NX: never overwrite what a revocation (or an issue) wrote meanwhile.
                self._client.set(key, raw, ex=seconds, nx=True)
            else:
                self._client.eval(_REPLACE_IF_UNCHANGED, 1, key, replacing, raw, seconds)
        except redis.RedisError as problem:
            log_redis_unavailable("token lookup not cached", problem)


def _read_token(engine: Engine, token_hash: bytes) -> Row[Any] | None:
    with engine.connect() as connection:
        return connection.execute(_LOOKUP, {"token_hash": token_hash}).one_or_none()
