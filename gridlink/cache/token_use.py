"""Record when each token was last used, at most once an hour, so idle tokens can end.

Every authenticated request uses a token; writing ``last_used_on`` each time
would add a primary write (and a wait for the synchronous standby) to every
one of them. Instead the token cache calls ``record`` only when the caller's
last use on record is ``USE_RECORD_SECONDS`` old, and one ``SET NX`` in
Redis, per token per interval, picks the one request of the whole fleet that
writes it. The UPDATE itself is conditional too, so without Redis the
database keeps it to one write per interval. Idle expiry is therefore exact to
the interval: a token ends between ``idle - 1 h`` and ``idle`` after its last
use.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from gridlink.cache.lifetime import RedisLifetime, log_redis_unavailable
from gridlink.db.failures import went_away

log = logging.getLogger(__name__)

USE_RECORD_SECONDS = 3600

_RECORD_USE = text(
    """
    UPDATE auth_tokens SET last_used_on = :used_on
    WHERE token_hash = :token_hash AND last_used_on <= :stale_before
    """
)
# A lost last-use record only brings an idle token's end an interval closer:
# not worth waiting for the synchronous standby.
_ASYNCHRONOUS_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


class UseRecorder:
    """Write tokens' last use to the primary, one write per token per ``USE_RECORD_SECONDS``."""

    def __init__(self, lifetime: RedisLifetime, primary: Engine) -> None:
        self._lifetime = lifetime
        self._primary = primary

    def is_due(self, last_used_at: float, now: float) -> bool:
        """Tell whether a use at ``now`` must be recorded, given the one on record."""
        return now - last_used_at >= USE_RECORD_SECONDS

    def record(self, token_hash: bytes, now: float) -> None:
        """Record a use of the token at ``now`` (seconds since the epoch), unless another did."""
        try:
            key = self._lifetime.key("token-used", token_hash.hex())
            claimed = bool(self._lifetime.client.set(key, b"1", ex=USE_RECORD_SECONDS, nx=True))
        except redis.RedisError as problem:
            log_redis_unavailable("token use not claimed; the database decides", problem)
            claimed = True
        if not claimed:
            return
        used_on = datetime.fromtimestamp(now, UTC)
        try:
            with self._primary.begin() as connection:
                connection.execute(_ASYNCHRONOUS_COMMIT)
                connection.execute(
                    _RECORD_USE,
                    {
                        "token_hash": token_hash,
                        "used_on": used_on,
                        "stale_before": used_on - timedelta(seconds=USE_RECORD_SECONDS),
                    },
                )
        except DBAPIError as problem:
            if not went_away(problem):
                raise
            # The request goes on (reads are served without the primary, or
            # with a demoted one). The claim is kept: one attempt per token per
            # interval, not one per request, each waiting for a connect timeout.
            log.warning("token use not recorded: the primary is unreachable or demoted")
