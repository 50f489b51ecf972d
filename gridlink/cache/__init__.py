"""The cache protocol, in one place: what Redis holds, for how long, and why it is never stale.

- ``lifetime``   the Redis client, one keyspace per Redis lifetime (run_id), the cool-off
- ``profiles``   profile entries: the store rule (store-if-newer; long fills only with a
                 lease that proves them), leases, single-flight fills
- ``marks``      read-your-writes marks
- ``positions``  WAL positions as Redis keeps them (16 hex digits)
- ``stream``     the change stream: the outbox the commands write, the relay that drains
                 it into Redis, its applied position and its lag
- ``tokens``     the token cache: the caller behind each token, tombstones for revoked
                 ones, written through after each commit and filled from the primary
- ``near``       each process's memory of recently read profiles, dropped on Redis's
                 invalidations, answering only while provably current

Every rule that depends on time reads one injected clock (``ProfileCache(clock=...)``).
Redis is optional: nothing here raises because Redis is down, except where a
caller must know (``CacheUnavailable``).
"""

from gridlink.cache.lifetime import (
    TIMEOUT_COOL_OFF_SECONDS,
    CacheUnavailable,
    RedisLifetime,
    log_redis_unavailable,
)
from gridlink.cache.profiles import (
    AUTHORITATIVE_TTL_SECONDS,
    SHORT_FILL_TTL_SECONDS,
    CachedProfile,
    Fill,
    ProfileCache,
)
from gridlink.cache.tokens import TOKEN_CACHE_SECONDS, TokenCache

__all__ = [
    "AUTHORITATIVE_TTL_SECONDS",
    "SHORT_FILL_TTL_SECONDS",
    "TIMEOUT_COOL_OFF_SECONDS",
    "TOKEN_CACHE_SECONDS",
    "CacheUnavailable",
    "CachedProfile",
    "Fill",
    "ProfileCache",
    "RedisLifetime",
    "TokenCache",
    "log_redis_unavailable",
]
